/* Thread wake-up cost on this machine: two threads pass one byte back and forth through
 * pipes, each sleeping in poll() until the other writes, as the gateway's lws thread and
 * upstream thread hand a request to each other. Reports the round trip (two wake-ups)
 * p50 / p90 / p99 in µs, back to back and with a pause before each ping (as when a stream's
 * deltas arrive 20 ms apart). Pin both threads to one CPU with `taskset -c 0` to compare
 * with wake-ups that do not cross CPUs.
 *
 * Usage: wye-bench-wake [ROUND_TRIPS (20000)] [PAUSES_US (0,1000,20000)] */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

struct pipes {
    int ping[2], pong[2]; /* [0] read end, [1] write end */
};

/* Sleeps in poll() until fd is readable, then reads one byte; -1 on error or end of file. */
static int wait_byte(int fd, char *c)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (poll(&pf, 1, -1) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return read(fd, c, 1) == 1 ? 0 : -1;
}

static void *echo_main(void *arg)
{
    const struct pipes *p = arg;
    char c;
    while (wait_byte(p->ping[0], &c) == 0 && c != 'q') {
        if (write(p->pong[1], &c, 1) != 1) {
            break;
        }
    }
    return NULL;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int measure(const struct pipes *p, int n, long pause_us, long long *rt)
{
    char c = 'x';
    for (int i = 0; i < n; i++) {
        if (pause_us > 0) {
            struct timespec ts = {.tv_sec = pause_us / 1000000,
                                  .tv_nsec = (pause_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
        long long t0 = wye_now_ns();
        if (write(p->ping[1], &c, 1) != 1 || wait_byte(p->pong[0], &c) != 0) {
            return -1;
        }
        rt[i] = wye_now_ns() - t0;
    }
    qsort(rt, (size_t)n, sizeof(*rt), cmp_ll);
    printf("pause %6ld us: round trip p50 %7.1f  p90 %7.1f  p99 %7.1f us (%d round trips)\n",
           pause_us, (double)rt[n / 2] / 1e3, (double)rt[n * 9 / 10] / 1e3,
           (double)rt[n * 99 / 100] / 1e3, n);
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    const char *pauses = argc > 2 ? argv[2] : "0,1000,20000";
    if (n < 100 || n > 10000000 || strcmp(pauses, "--help") == 0 ||
        (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: wye-bench-wake [ROUND_TRIPS (100..10000000, default 20000)] "
                        "[PAUSES_US (comma-separated, default 0,1000,20000)]\n");
        return 2;
    }
    struct pipes p;
    if (pipe(p.ping) != 0 || pipe(p.pong) != 0) {
        perror("wye-bench-wake: pipe");
        return 1;
    }
    long long *rt = malloc(sizeof(*rt) * (size_t)n);
    pthread_t echo;
    if (!rt || pthread_create(&echo, NULL, echo_main, &p) != 0) {
        fprintf(stderr, "wye-bench-wake: out of memory or threads\n");
        return 1;
    }
    int rc = 0;
    for (const char *s = pauses; *s && rc == 0;) {
        char *end;
        long pause_us = strtol(s, &end, 10);
        if (end == s || pause_us < 0 || pause_us > 1000000) {
            fprintf(stderr, "wye-bench-wake: bad pause list '%s'\n", pauses);
            rc = 2;
            break;
        }
        /* long pauses: fewer round trips, so that a point takes at most ~10 s */
        int k =
            pause_us > 0 && (long long)n * pause_us > 10000000LL ? (int)(10000000 / pause_us) : n;
        if (measure(&p, k < 100 ? 100 : k, pause_us, rt) != 0) {
            perror("wye-bench-wake: pipe I/O");
            rc = 1;
        }
        s = *end == ',' ? end + 1 : end;
    }
    char q = 'q';
    if (write(p.ping[1], &q, 1) == 1) {
        pthread_join(echo, NULL);
    }
    free(rt);
    return rc;
}
