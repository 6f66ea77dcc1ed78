/* A growable byte buffer with a hard cap given at init (curl's dynbuf). Appending past the
 * cap fails with WYE_ERR_TOOBIG and leaves the buffer as it was. The content is always
 * NUL-terminated (the terminator is not counted in len). Caller-owned; not thread-safe. */
#ifndef WYE_COMMON_BUF_H
#define WYE_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "common/err.h"

struct wye_buf {
    char *data;  /* NULL until the first append */
    size_t len;  /* bytes used, excluding the NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* the hard cap on len */
};

/* Initialises an empty buffer that may grow to max bytes. Allocates nothing. */
void wye_buf_init(struct wye_buf *b, size_t max);
/* Frees the memory; the buffer may be reused after wye_buf_init. */
void wye_buf_cleanup(struct wye_buf *b);
/* Sets len to 0, keeping the memory. */
void wye_buf_reset(struct wye_buf *b);
/* Ensures room for n more bytes without reallocating later. */
enum wye_err wye_buf_reserve(struct wye_buf *b, size_t n);
/* Appends n bytes. NOMEM or TOOBIG leave the buffer unchanged. */
enum wye_err wye_buf_append(struct wye_buf *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
enum wye_err wye_buf_append_str(struct wye_buf *b, const char *s);
/* Appends printf-formatted text. */
enum wye_err wye_buf_printf(struct wye_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum wye_err wye_buf_vprintf(struct wye_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Appends s as a JSON string literal (with quotes), escaping as RFC 8259 requires. */
enum wye_err wye_buf_append_json_str(struct wye_buf *b, const char *s, size_t n);
/* Removes the first n bytes (n <= len). */
void wye_buf_consume(struct wye_buf *b, size_t n);
/* Hands the memory to the caller (who frees it with wye_free) and resets b. */
char *wye_buf_steal(struct wye_buf *b, size_t *len);

#endif
