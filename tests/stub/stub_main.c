/* wye-stub-upstream: the stand-in OpenAI-compatible upstream as a program, for benchmarks and
 * for trying wye by hand. Usage: wye-stub-upstream [--port N] [--host ADDR] [--quiet].
 * Main thread waits for SIGINT/SIGTERM; the stub serves from its own thread. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/stub/stub_upstream.h"

int main(int argc, char **argv)
{
    int port = 8081;
    const char *host = "127.0.0.1";
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
            host = argv[++i];
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = true;
        } else {
            fprintf(stderr, "usage: %s [--port N] [--host ADDR] [--quiet]\n", argv[0]);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* the stub's thread inherits the mask */
    struct stub_upstream *s = stub_upstream_start_on(host, port, quiet);
    if (!s) {
        fprintf(stderr, "wye-stub-upstream: cannot listen on %s:%d\n", host, port);
        return 1;
    }
    printf("wye-stub-upstream listening on http://%s:%d/v1\n", host, stub_upstream_port(s));
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    stub_upstream_stop(s);
    return 0;
}
