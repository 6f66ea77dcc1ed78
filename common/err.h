/* The project-wide error enum. Functions return enum wye_err; 0 is success. */
#ifndef WYE_COMMON_ERR_H
#define WYE_COMMON_ERR_H

enum wye_err {
    WYE_OK = 0,
    WYE_ERR_NOMEM,     /* allocation failed */
    WYE_ERR_TOOBIG,    /* a size, count or length limit was exceeded */
    WYE_ERR_INVAL,     /* invalid argument or request */
    WYE_ERR_PARSE,     /* malformed input (JSON, SSE, GGUF, config) */
    WYE_ERR_IO,        /* a system call failed; errno was logged */
    WYE_ERR_AGAIN,     /* try again later (queue full, backpressure) */
    WYE_ERR_CANCELED,  /* the request was cancelled */
    WYE_ERR_TIMEOUT,   /* a deadline passed */
    WYE_ERR_UPSTREAM,  /* the remote LLM API failed or misbehaved */
    WYE_ERR_NOTFOUND,  /* no such model, key, file or route */
    WYE_ERR_AUTH,      /* missing or wrong credentials */
    WYE_ERR_DENIED,    /* valid credentials, not allowed this (a key's routes) */
    WYE_ERR_LIMIT,     /* a rate limit or budget was reached */
    WYE_ERR_UNSUPPORTED, /* valid but not implemented for this input */
    WYE_ERR_INTERNAL,  /* a bug: an invariant did not hold */
    WYE_ERR__COUNT
};

/* Returns a short static description of err ("out of memory", ...). */
const char *wye_err_str(enum wye_err err);

/* Always-on assertion for programmer errors only; never for untrusted input. */
#define WYE_ASSERT(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            wye_assert_fail(#cond, __FILE__, __LINE__);                                        \
        }                                                                                      \
    } while (0)

/* Logs the failed assertion and aborts. */
_Noreturn void wye_assert_fail(const char *expr, const char *file, int line);

#endif
