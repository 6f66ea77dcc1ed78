/* Line-at-a-time logger with secret redaction. Any thread: the level and fd are atomics,
 * the secret list is guarded by a mutex and only grows. */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096
#define LOG_SECRETS_MAX 32

static atomic_int log_level = WYE_LOG_INFO;
static atomic_int log_fd = 2;
static pthread_mutex_t secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[LOG_SECRETS_MAX];
static int n_secrets;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void wye_log_set_level(enum wye_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum wye_log_level wye_log_get_level(void)
{
    return (enum wye_log_level)atomic_load(&log_level);
}

bool wye_log_level_parse(const char *s, enum wye_log_level *out)
{
    for (int i = 0; i <= WYE_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum wye_log_level)i;
            return true;
        }
    }
    return false;
}

void wye_log_init_from_env(void)
{
    const char *s = getenv("WYE_LOG_LEVEL");
    enum wye_log_level level;
    if (s && wye_log_level_parse(s, &level)) {
        wye_log_set_level(level);
    }
}

void wye_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void wye_log_add_secret(const char *secret)
{
    if (!secret || strlen(secret) < 4) {
        return;
    }
    pthread_mutex_lock(&secrets_lock);
    for (int i = 0; i < n_secrets; i++) {
        if (strcmp(secrets[i], secret) == 0) {
            pthread_mutex_unlock(&secrets_lock);
            return;
        }
    }
    if (n_secrets < LOG_SECRETS_MAX) {
        char *copy = strdup(secret);
        if (copy) {
            secrets[n_secrets++] = copy;
        }
    }
    pthread_mutex_unlock(&secrets_lock);
}

/* Replaces every registered secret in line[0..*len) in place (the marker is never longer
 * than a secret of 10+ chars; shorter secrets are masked with '*'). */
static void redact(char *line, size_t *len)
{
    static const char marker[] = "[redacted]";
    pthread_mutex_lock(&secrets_lock);
    for (int i = 0; i < n_secrets; i++) {
        size_t slen = strlen(secrets[i]);
        char *p = line;
        while ((p = memmem(p, *len - (size_t)(p - line), secrets[i], slen)) != NULL) {
            if (slen >= sizeof(marker) - 1) {
                size_t mlen = sizeof(marker) - 1;
                memcpy(p, marker, mlen);
                memmove(p + mlen, p + slen, *len - (size_t)(p - line) - slen);
                *len -= slen - mlen;
                p += mlen;
            } else {
                memset(p, '*', slen);
                p += slen;
            }
        }
    }
    pthread_mutex_unlock(&secrets_lock);
}

void wye_log(enum wye_log_level level, const char *reqid, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_level) || level >= WYE_LOG_OFF) {
        return;
    }
    char line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    if (reqid && *reqid && n > 0 && (size_t)n < sizeof(line)) {
        n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s] ", reqid);
    }
    if (n > 0 && (size_t)n < sizeof(line) - 1) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - 1 - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0) {
            n += m;
        }
    }
    if (n < 0) {
        return;
    }
    size_t len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
    /* Keep each entry on one line. */
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\n' || line[i] == '\r') {
            line[i] = ' ';
        }
    }
    redact(line, &len);
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&log_fd), line, len);
    (void)w;
}

const char *wye_strerror(int errnum, char *buf, unsigned len)
{
    if (len == 0) {
        return buf;
    }
#if (_POSIX_C_SOURCE >= 200112L) && !defined(_GNU_SOURCE)
    if (strerror_r(errnum, buf, len) != 0) {
        snprintf(buf, len, "errno %d", errnum);
    }
    return buf;
#else
    return strerror_r(errnum, buf, len);
#endif
}
