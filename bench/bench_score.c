/* wye-bench-score: how long the complexity score takes per request on the thread that calls
 * it (the lws thread in the gateway): feature extraction + scoring + the reasons JSON, for a
 * short chat turn, a mid-size prompt, a long one past the 16 KiB scan window, and the prompts
 * of a JSONL file when one is given. Prints microseconds per request. Single-threaded. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "router/score.h"

static double bench_text(const struct rt_score_model *m, const char *text, int iters)
{
    size_t len = strlen(text);
    volatile float sink = 0;
    char reasons[512];
    int64_t t0 = wye_now_ns();
    for (int i = 0; i < iters; i++) {
        struct rt_features f;
        struct rt_score_result r;
        rt_features_extract_text(text, len, &f);
        rt_score(m, &f, 3, &r);
        rt_score_reasons_json(&r, reasons, sizeof(reasons));
        sink += r.score;
    }
    (void)sink;
    return (double)(wye_now_ns() - t0) / 1e3 / iters;
}

static char *repeat(const char *unit, size_t total)
{
    size_t n = strlen(unit);
    char *s = malloc(total + 1);
    if (!s) {
        return NULL;
    }
    for (size_t i = 0; i < total; i++) {
        s[i] = unit[i % n];
    }
    s[total] = '\0';
    return s;
}

int main(int argc, char **argv)
{
    struct rt_score_model m;
    char err[256];
    if (rt_score_model_default(&m, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "wye-bench-score: %s\n", err);
        return 1;
    }
    const char *para = "Write a Python function that parses the log file, then compare the "
                       "error rates per hour and explain why they differ. $x^2 + 1 = 5$? ";
    char *mid = repeat(para, 2000);
    char *big = repeat(para, 256 * 1024);
    if (!mid || !big) {
        fprintf(stderr, "wye-bench-score: out of memory\n");
        return 1;
    }
    printf("%-28s %10s\n", "input", "us/request");
    printf("%-28s %10.2f\n", "short (16 B)", bench_text(&m, "hi, how are you?", 200000));
    printf("%-28s %10.2f\n", "mid (2 KB)", bench_text(&m, mid, 20000));
    printf("%-28s %10.2f\n", "long (256 KB, 16 KiB scan)", bench_text(&m, big, 500));
    free(mid);
    free(big);
    if (argc > 1) {
        FILE *f = fopen(argv[1], "r");
        if (!f) {
            perror(argv[1]);
            return 1;
        }
        char line[1 << 16];
        double total = 0;
        long n = 0;
        while (fgets(line, sizeof(line), f)) {
            cJSON *o = cJSON_Parse(line);
            const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(o, "prompt"));
            if (p) {
                total += bench_text(&m, p, 200);
                n++;
            }
            cJSON_Delete(o);
        }
        fclose(f);
        printf("%-28s %10.2f (mean over %ld prompts)\n", argv[1], n ? total / n : 0.0, n);
    }
    return 0;
}
