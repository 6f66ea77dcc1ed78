/* Time helpers. Any thread. */
#include "common/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t wye_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * WYE_NS_PER_S + ts.tv_nsec;
}

int64_t wye_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wye_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void wye_format_rfc3339(int64_t wall_ms, char *out, unsigned len)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
}

bool wye_cpu_ticks_parse(const char *line, struct wye_cpu_ticks *t)
{
    uint64_t v[8];
    if (strncmp(line, "cpu ", 4) != 0 ||
        sscanf(line + 4,
               "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
               " %" SCNu64,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8) {
        return false;
    }
    t->total = 0;
    for (int i = 0; i < 8; i++) {
        t->total += v[i];
    }
    t->steal = v[7];
    return true;
}

bool wye_cpu_ticks_read(struct wye_cpu_ticks *t)
{
    *t = (struct wye_cpu_ticks){0};
    FILE *f = fopen("/proc/stat", "re");
    if (!f) {
        return false;
    }
    char line[512];
    bool ok = fgets(line, sizeof(line), f) && wye_cpu_ticks_parse(line, t);
    fclose(f);
    return ok;
}

double wye_cpu_steal_fraction(const struct wye_cpu_ticks *a, const struct wye_cpu_ticks *b)
{
    if (a->total == 0 || b->total <= a->total || b->steal < a->steal) {
        return -1.0;
    }
    return (double)(b->steal - a->steal) / (double)(b->total - a->total);
}
