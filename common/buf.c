/* Capped growable buffers. Caller's thread. */
#include "common/buf.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

void wye_buf_init(struct wye_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void wye_buf_cleanup(struct wye_buf *b)
{
    wye_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void wye_buf_reset(struct wye_buf *b)
{
    b->len = 0;
    if (b->data) {
        b->data[0] = '\0';
    }
}

enum wye_err wye_buf_reserve(struct wye_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n) {
        return WYE_ERR_TOOBIG;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap) {
        return WYE_OK;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    }
    if (cap > b->max + 1) {
        cap = b->max + 1;
    }
    char *p = wye_realloc(b->data, cap);
    if (!p) {
        return WYE_ERR_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return WYE_OK;
}

enum wye_err wye_buf_append(struct wye_buf *b, const void *p, size_t n)
{
    enum wye_err err = wye_buf_reserve(b, n);
    if (err) {
        return err;
    }
    if (n) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return WYE_OK;
}

enum wye_err wye_buf_append_str(struct wye_buf *b, const char *s)
{
    return wye_buf_append(b, s, strlen(s));
}

enum wye_err wye_buf_vprintf(struct wye_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    /* Format straight into the spare room: one pass when it fits, which is nearly always on the
     * hot paths (a sized buffer reused per chunk or record); measure and retry only when not.
     * cap <= max + 1, so what fits the room also fits the cap on len. */
    size_t room = b->data ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        if (room) {
            b->data[b->len] = '\0';
        }
        return WYE_ERR_INVAL;
    }
    if ((size_t)n < room) {
        b->len += (size_t)n;
        return WYE_OK;
    }
    if (room) {
        b->data[b->len] = '\0'; /* the cut attempt leaves nothing behind */
    }
    enum wye_err err = wye_buf_reserve(b, (size_t)n);
    if (err) {
        return err;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return WYE_OK;
}

enum wye_err wye_buf_printf(struct wye_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum wye_err err = wye_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return err;
}

enum wye_err wye_buf_append_json_str(struct wye_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = b->len;
    enum wye_err err = wye_buf_append(b, "\"", 1);
    size_t run = 0; /* bytes that need no escaping, copied in one go */
    for (size_t i = 0; !err && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 0;
        switch (c) {
        case '"': memcpy(esc, "\\\"", 2); elen = 2; break;
        case '\\': memcpy(esc, "\\\\", 2); elen = 2; break;
        case '\n': memcpy(esc, "\\n", 2); elen = 2; break;
        case '\r': memcpy(esc, "\\r", 2); elen = 2; break;
        case '\t': memcpy(esc, "\\t", 2); elen = 2; break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                elen = 6;
            }
        }
        if (elen == 0) {
            run++;
            continue;
        }
        err = wye_buf_append(b, s + i - run, run);
        run = 0;
        if (!err) {
            err = wye_buf_append(b, esc, elen);
        }
    }
    if (!err) {
        err = wye_buf_append(b, s + n - run, run);
    }
    if (!err) {
        err = wye_buf_append(b, "\"", 1);
    }
    if (err) {
        b->len = start;
        if (b->data) {
            b->data[start] = '\0';
        }
    }
    return err;
}

void wye_buf_consume(struct wye_buf *b, size_t n)
{
    if (n >= b->len) {
        wye_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *wye_buf_steal(struct wye_buf *b, size_t *len)
{
    char *p = b->data;
    if (len) {
        *len = b->len;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
