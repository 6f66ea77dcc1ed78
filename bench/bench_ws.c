/* wye-bench-ws: how many concurrent WebSocket streams one wye process holds, and its memory
 * per stream. Opens N WebSocket connections to a running `wye serve`, starts one slow stream
 * on each (the stand-in upstream sends a delta every delay_ms), waits until every stream has
 * delivered its first delta, and reports wye's resident memory growth divided by N. The
 * streams stay open while memory is read, so each one holds its client socket, its upstream
 * transfer and its queues. With --idle M it then opens M more WebSocket connections that send
 * nothing and reports the memory per idle connection too (the ceiling on streams in the
 * benchmark setup is the stand-in upstream's 1024 connections, not wye's). Single-threaded
 * (main); uses the test suite's raw WebSocket client. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "tests/gateway/ws_client.h"

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kib;
}

static void usage(void)
{
    fprintf(stderr, "usage: wye-bench-ws --port PORT --pid WYE_PID [--streams N] "
                    "[--idle M] [--delay-ms D] [--chunks K] [--json]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},     {"pid", required_argument, NULL, 'P'},
        {"streams", required_argument, NULL, 'n'},  {"delay-ms", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},           {"help", no_argument, NULL, 'h'},
        {"idle", required_argument, NULL, 'i'},     {"chunks", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    /* The stub builds each whole answer up front (~200 bytes a chunk), so the default keeps a
     * stream alive for 10 minutes (600 deltas, one a second) without costing the stub GBs. */
    int port = 0, pid = 0, n = 1000, delay = 1000, json = 0, idle = 0, chunks = 600, c;
    while ((c = getopt_long(argc, argv, "p:P:n:d:i:k:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'P': pid = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'd': delay = atoi(optarg); break;
        case 'i': idle = atoi(optarg); break;
        case 'k': chunks = atoi(optarg); break;
        case 'j': json = 1; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (port <= 0 || pid <= 0 || n < 1 || idle < 0 || chunks < 2 || delay < 0) {
        usage();
        return 2;
    }
    struct wsc *cs = calloc((size_t)n + (size_t)idle, sizeof(*cs));
    if (!cs) {
        return 1;
    }
    long rss0 = rss_kib(pid);
    int64_t t0 = wye_now_ns();
    int opened = 0, streaming = 0;
    char msg[256];
    for (int i = 0; i < n; i++) {
        if (wsc_connect(&cs[i], port, "/v1/ws", NULL, 0, 5000) != 101) {
            fprintf(stderr, "connection %d: handshake failed\n", i);
            break;
        }
        opened++;
        snprintf(msg, sizeof(msg),
                 "{\"type\":\"response.create\",\"id\":\"s%d\",\"response\":{\"model\":\"auto\","
                 "\"messages\":[{\"role\":\"user\",\"content\":\"#stub n=%d delay_ms=%d\"}]}}",
                 i, chunks, delay);
        if (!wsc_send_text(&cs[i], msg)) {
            fprintf(stderr, "connection %d: send failed\n", i);
            break;
        }
    }
    /* Every stream is live once it has delivered a delta. */
    for (int i = 0; i < opened; i++) {
        for (;;) {
            char *text = NULL;
            size_t len;
            int op = wsc_recv(&cs[i], &text, &len, NULL, 10000);
            bool delta = op == WSC_TEXT && text && strstr(text, "output_text.delta");
            bool bad = op != WSC_TEXT || (text && strstr(text, "\"error\""));
            if (bad && text) {
                fprintf(stderr, "stream %d: %.600s\n", i, text);
            }
            wye_free(text);
            if (delta) {
                streaming++;
                break;
            }
            if (bad) {
                break;
            }
        }
    }
    double secs = (double)(wye_now_ns() - t0) / 1e9;
    long rss1 = rss_kib(pid);
    double per = streaming ? (double)(rss1 - rss0) * 1024.0 / streaming : 0;
    /* Idle connections: handshake only; a pong-free wait keeps them open while RSS is read. */
    int idle_open = 0;
    for (int i = 0; i < idle; i++) {
        if (wsc_connect(&cs[opened + idle_open], port, "/v1/ws", NULL, 0, 5000) != 101) {
            fprintf(stderr, "idle connection %d: handshake failed\n", i);
            break;
        }
        idle_open++;
    }
    long rss2 = rss_kib(pid);
    double per_idle = idle_open ? (double)(rss2 - rss1) * 1024.0 / idle_open : 0;
    if (json) {
        printf("{\"label\":\"ws-capacity\",\"streams_requested\":%d,\"streams_live\":%d,"
               "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"bytes_per_stream\":%.0f,"
               "\"setup_s\":%.2f,\"idle_requested\":%d,\"idle_open\":%d,"
               "\"rss_after_idle_kib\":%ld,\"bytes_per_idle_conn\":%.0f}\n",
               n, streaming, rss0, rss1, per, secs, idle, idle_open, rss2, per_idle);
    } else {
        printf("ws-capacity: %d/%d streams live, RSS %ld -> %ld KiB, %.1f KiB per stream, "
               "set up in %.2f s\n",
               streaming, n, rss0, rss1, per / 1024, secs);
        if (idle) {
            printf("ws-capacity: %d/%d idle connections open, RSS %ld -> %ld KiB, %.1f KiB per "
                   "connection\n",
                   idle_open, idle, rss1, rss2, per_idle / 1024);
        }
    }
    for (int i = 0; i < opened + idle_open; i++) {
        wsc_close(&cs[i]);
    }
    free(cs);
    return streaming == n && idle_open == idle ? 0 : 1;
}
