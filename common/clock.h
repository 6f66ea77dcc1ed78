/* Time helpers. Any thread. */
#ifndef WYE_COMMON_CLOCK_H
#define WYE_COMMON_CLOCK_H

#include <stdint.h>

/* Monotonic nanoseconds since an arbitrary origin. */
int64_t wye_now_ns(void);
/* Wall-clock milliseconds since the Unix epoch. */
int64_t wye_wall_ms(void);
/* Sleeps for ms milliseconds (restarting after signals). */
void wye_sleep_ms(int64_t ms);
/* Formats wall-clock ms as RFC 3339 UTC with milliseconds into out (at least 25 bytes). */
void wye_format_rfc3339(int64_t wall_ms, char *out, unsigned len);

#define WYE_NS_PER_MS INT64_C(1000000)
#define WYE_NS_PER_S INT64_C(1000000000)

#endif
