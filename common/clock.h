/* Time helpers. Any thread. */
#ifndef WYE_COMMON_CLOCK_H
#define WYE_COMMON_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

/* Monotonic nanoseconds since an arbitrary origin. */
int64_t wye_now_ns(void);
/* Wall-clock milliseconds since the Unix epoch. */
int64_t wye_wall_ms(void);
/* Sleeps for ms milliseconds (restarting after signals). */
void wye_sleep_ms(int64_t ms);
/* Formats wall-clock ms as RFC 3339 UTC with milliseconds into out (at least 25 bytes). */
void wye_format_rfc3339(int64_t wall_ms, char *out, unsigned len);

/* The whole machine's CPU time so far, from the first line of /proc/stat, in clock ticks: all
 * of it, and "steal", the time a hypervisor ran other guests while this one had work. The
 * benchmarks report steal next to their figures: under a busy hypervisor a run measures the
 * neighbours, not the code. */
struct wye_cpu_ticks {
    uint64_t total, steal;
};
/* Reads them; false when /proc/stat is missing or unreadable (not Linux). */
bool wye_cpu_ticks_read(struct wye_cpu_ticks *t);
/* Parses a /proc/stat "cpu " line ("cpu user nice system idle iowait irq softirq steal
 * [guest guest_nice]"; guest time is already in user and not counted twice); false if the
 * line is not one. */
bool wye_cpu_ticks_parse(const char *line, struct wye_cpu_ticks *t);
/* Steal between two readings as a fraction of all CPU time between them; -1 when unknown
 * (a reading failed, or no tick passed). */
double wye_cpu_steal_fraction(const struct wye_cpu_ticks *a, const struct wye_cpu_ticks *b);

#define WYE_NS_PER_MS INT64_C(1000000)
#define WYE_NS_PER_S INT64_C(1000000000)

#endif
