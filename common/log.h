/* Logging to stderr: one write(2) per line, a level, an optional request id. Registered
 * secrets are replaced by "[redacted]" in every line, so a key that slips into a message
 * never reaches the log. Any thread. */
#ifndef WYE_COMMON_LOG_H
#define WYE_COMMON_LOG_H

#include <stdbool.h>

enum wye_log_level {
    WYE_LOG_DEBUG = 0,
    WYE_LOG_INFO,
    WYE_LOG_WARN,
    WYE_LOG_ERROR,
    WYE_LOG_OFF
};

/* Sets the minimum level printed (default INFO, or WYE_LOG_LEVEL=debug|info|warn|error|off). */
void wye_log_set_level(enum wye_log_level level);
enum wye_log_level wye_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns false if unknown. */
bool wye_log_level_parse(const char *s, enum wye_log_level *out);
/* Sets the level from WYE_LOG_LEVEL if set. */
void wye_log_init_from_env(void);
/* Registers a secret (copied; at least 4 chars) to be redacted from every log line. */
void wye_log_add_secret(const char *secret);
/* Redirects output to fd (default 2); for tests that read the log. */
void wye_log_set_fd(int fd);

/* Logs one line. reqid may be NULL. Lines are truncated at 4 KiB. */
void wye_log(enum wye_log_level level, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define WYE_DEBUG(...) wye_log(WYE_LOG_DEBUG, NULL, __VA_ARGS__)
#define WYE_INFO(...) wye_log(WYE_LOG_INFO, NULL, __VA_ARGS__)
#define WYE_WARN(...) wye_log(WYE_LOG_WARN, NULL, __VA_ARGS__)
#define WYE_ERROR(...) wye_log(WYE_LOG_ERROR, NULL, __VA_ARGS__)

/* Formats errno as text into buf (thread-safe strerror_r wrapper); returns buf. */
const char *wye_strerror(int errnum, char *buf, unsigned len);

#endif
