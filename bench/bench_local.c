/* Local backend throughput: aggregate generated tokens/s for 1, 4 and 8 concurrent chats,
 * batched (one rt_local with n_seq_max = concurrency: every chat in one context, one forward
 * pass per step advancing all of them) against one at a time (n_seq_max = 1, the chats run
 * back to back), through rt_local_submit exactly as the gateway drives it. The model is a
 * Qwen2.5-0.5B-shaped random-weight GGUF (Q8_0) that the bench writes with mkmodel into a
 * temporary directory, or -m PATH. Greedy, a fixed prompt (a number in front so no two chats
 * share a prefix), N new tokens each; wall time from the first submit to the last finish.
 * Also the decode-phase rate (tokens after the first over the time some chat was decoding),
 * which is what batching speeds up: prompt processing is matrix-matrix either way.
 * Single-threaded driver; the engine worker thread runs the sinks.
 *
 * Usage: wye-bench-local [-m MODEL.gguf] [-n 64] [-t THREADS (0: all cores)]
 *                        [-c 1,4,8] [--json] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "common/clock.h"
#include "common/log.h"
#include "conf/conf.h"
#include "local-engine/model_internal.h"
#include "local-engine/types.h"
#include "router/local.h"

#define CONC_MAX 64

struct bsink {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *n_done;
    int64_t tokens;
    int64_t t_first, t_end; /* first emitted event, finish (wye_now_ns) */
    enum wye_err err;
    char msg[256];
};

static void bs_start(void *ctx, const struct wye_start *info)
{
    (void)ctx;
    (void)info;
}

static enum wye_err bs_emit(void *ctx, const struct wye_event *ev)
{
    struct bsink *s = ctx;
    if (s->t_first == 0) {
        s->t_first = wye_now_ns();
    }
    if (ev->type == WYE_EV_USAGE) {
        s->tokens = ev->usage.completion_tokens;
    }
    return WYE_OK;
}

static void bs_finish(void *ctx, const struct wye_result *res)
{
    struct bsink *s = ctx;
    pthread_mutex_lock(s->mu);
    s->t_end = wye_now_ns();
    s->err = res->err;
    snprintf(s->msg, sizeof(s->msg), "%s", res->message ? res->message : "");
    (*s->n_done)++;
    pthread_cond_broadcast(s->cv);
    pthread_mutex_unlock(s->mu);
}

static bool bs_cancelled(void *ctx)
{
    (void)ctx;
    return false;
}

static void bs_set_wakeup(void *ctx, void (*wake)(void *), void *arg)
{
    (void)ctx;
    (void)wake;
    (void)arg;
}

static const struct wye_sink_ops bs_ops = {bs_start, bs_emit, bs_finish, bs_cancelled,
                                           bs_set_wakeup};

static struct wye_chat_req *mkreq(int k, int n_new)
{
    char text[256];
    snprintf(text, sizeof(text),
             "%d. Write a short story about a lighthouse keeper who finds a message in a bottle.",
             k);
    cJSON *body = cJSON_CreateObject();
    cJSON *msgs = cJSON_AddArrayToObject(body, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", text);
    cJSON_AddItemToArray(msgs, m);
    cJSON_AddNumberToObject(body, "temperature", 0);
    cJSON_AddNumberToObject(body, "max_tokens", n_new);
    struct wye_chat_limits lim = {.depth_max = 16, .n_msgs_max = 8, .max_tokens_max = 100000};
    struct wye_chat_req *req = NULL;
    char err[256];
    if (wye_chat_req_from_json(body, &lim, &req, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "bench_local: request: %s\n", err);
        return NULL;
    }
    return req;
}

static int cmp_first(const void *a, const void *b)
{
    const struct bsink *x = a, *y = b;
    return x->t_first < y->t_first ? -1 : x->t_first > y->t_first;
}

/* Decode-phase rate: the tokens after each chat's first one over the wall time during which
 * at least one chat was past its first token (the union of the [first, end] intervals), so
 * prompt processing, which batching cannot speed up (it is already matrix-matrix), is out. */
static double decode_rate(struct bsink *s, int n)
{
    qsort(s, (size_t)n, sizeof(*s), cmp_first);
    int64_t busy = 0, lo = 0, hi = 0, toks = 0;
    for (int i = 0; i < n; i++) {
        toks += s[i].tokens > 1 ? s[i].tokens - 1 : 0;
        if (i == 0 || s[i].t_first > hi) {
            busy += hi - lo;
            lo = s[i].t_first;
            hi = s[i].t_end;
        } else if (s[i].t_end > hi) {
            hi = s[i].t_end;
        }
    }
    busy += hi - lo;
    return busy > 0 ? (double)toks / ((double)busy / 1e9) : -1;
}

/* Runs conc chats on a backend with n_seq sequences, submitting at most n_seq at a time.
 * Returns aggregate tokens/s (and the decode-phase rate in *decode), or a negative value on
 * failure. */
static double run(const char *model, int threads, int conc, int n_seq, int n_new,
                  int64_t *tokens_out, double *decode)
{
    struct conf_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.engine.model_path = (char *)model;
    cfg.engine.model_name = (char *)"bench";
    cfg.engine.n_threads = threads;
    cfg.engine.n_ctx = 256;
    cfg.engine.n_seq_max = n_seq;
    cfg.router.queue_max = CONC_MAX;
    struct rt_local *l = NULL;
    char err[512] = "";
    if (rt_local_create(&cfg, &l, err, sizeof(err)) != WYE_OK || rt_local_start(l) != WYE_OK) {
        fprintf(stderr, "bench_local: %s\n", err);
        rt_local_destroy(l);
        return -1;
    }
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int n_done = 0;
    struct bsink sinks[CONC_MAX];
    memset(sinks, 0, sizeof(sinks));
    double rate = -1;
    /* warm-up: one token faults every weight page of this mapping in, outside the timing */
    struct bsink warm = {.mu = &mu, .cv = &cv, .n_done = &n_done};
    struct wye_chat_req *wreq = mkreq(-1, 1);
    if (!wreq || rt_local_submit(l, wreq, (struct wye_sink){&bs_ops, &warm}, err, sizeof(err))) {
        fprintf(stderr, "bench_local: warm-up: %s\n", err);
        wye_chat_req_destroy(wreq);
        goto out;
    }
    pthread_mutex_lock(&mu);
    while (n_done < 1) {
        pthread_cond_wait(&cv, &mu);
    }
    n_done = 0;
    pthread_mutex_unlock(&mu);
    int64_t t0 = wye_now_ns();
    for (int i = 0; i < conc; i++) {
        /* one at a time when n_seq is 1: the next is submitted after the previous finished */
        pthread_mutex_lock(&mu);
        while (i - n_done >= n_seq) {
            pthread_cond_wait(&cv, &mu);
        }
        pthread_mutex_unlock(&mu);
        sinks[i] = (struct bsink){.mu = &mu, .cv = &cv, .n_done = &n_done};
        struct wye_chat_req *req = mkreq(i, n_new);
        if (!req) {
            goto out;
        }
        struct wye_sink sink = {&bs_ops, &sinks[i]};
        enum wye_err e = rt_local_submit(l, req, sink, err, sizeof(err));
        if (e) {
            fprintf(stderr, "bench_local: submit: %s: %s\n", wye_err_str(e), err);
            wye_chat_req_destroy(req);
            goto out;
        }
    }
    pthread_mutex_lock(&mu);
    while (n_done < conc) {
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    int64_t dt = wye_now_ns() - t0;
    int64_t tokens = 0;
    for (int i = 0; i < conc; i++) {
        if (sinks[i].err) {
            fprintf(stderr, "bench_local: chat %d failed: %s\n", i, sinks[i].msg);
            goto out;
        }
        tokens += sinks[i].tokens;
    }
    *tokens_out = tokens;
    rate = (double)tokens / ((double)dt / 1e9);
    *decode = decode_rate(sinks, conc);
out:
    rt_local_destroy(l);
    return rate;
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    const char *list = "1,4,8";
    int n_new = 64, threads = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            n_new = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            list = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "usage: wye-bench-local [-m MODEL.gguf] [-n 64] [-t THREADS] "
                            "[-c 1,4,8] [--json]\n");
            return 2;
        }
    }
    if (n_new < 1 || n_new > 200) {
        fprintf(stderr, "bench_local: -n must be 1..200 (the context is 256 tokens)\n");
        return 2;
    }
    wye_log_set_level(WYE_LOG_WARN);
    char tmpdir[] = "/tmp/wye-bench-local-XXXXXX";
    char path[512];
    bool made = false;
    if (!model) {
        if (!mkdtemp(tmpdir)) {
            perror("bench_local: mkdtemp");
            return 1;
        }
        snprintf(path, sizeof(path), "%s/qwen2.5-0.5b-q8_0.gguf", tmpdir);
        /* the Qwen2 vocabulary: $WYE_SHARED_DIR/vocab, else the shared folder beside the
         * source tree this was built from */
        char vocab[512];
        const char *shared = getenv("WYE_SHARED_DIR");
        snprintf(vocab, sizeof(vocab), "%s/vocab/ggml-vocab-qwen2.gguf",
                 shared && shared[0] ? shared : WYE_BENCH_SHARED_DIR);
        struct eng_mkmodel_opts o = {.shape = "qwen2.5-0.5b",
                                     .type = ENG_TYPE_Q8_0,
                                     .vocab_path = vocab,
                                     .out_path = path,
                                     .seed = 1};
        char err[512] = "";
        fprintf(stderr, "bench_local: writing a Qwen2.5-0.5B-shaped Q8_0 model to %s\n", path);
        if (eng_mkmodel_write(&o, err, sizeof(err)) != WYE_OK) {
            fprintf(stderr, "bench_local: mkmodel: %s\n", err);
            rmdir(tmpdir);
            return 1;
        }
        model = path;
        made = true;
    }
    int concs[16], n_conc = 0;
    for (const char *p = list; *p && n_conc < 16;) {
        int c = atoi(p);
        if (c < 1 || c > CONC_MAX) {
            fprintf(stderr, "bench_local: concurrency %d out of 1..%d\n", c, CONC_MAX);
            return 2;
        }
        concs[n_conc++] = c;
        p = strchr(p, ',');
        if (!p) {
            break;
        }
        p++;
    }
    double load[3] = {0};
    if (getloadavg(load, 3) < 1) {
        load[0] = -1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int rc = 0;
    if (!json) {
        printf("model %s, %d new tokens per chat, %d compute threads, load average %.2f\n", model,
               n_new, threads > 0 ? threads : (int)cores, load[0]);
        printf("%-6s %14s %14s %8s   %14s %14s %8s\n", "chats", "batched tok/s", "serial tok/s",
               "speedup", "decode batched", "decode serial", "speedup");
    } else {
        printf("{\"model\":\"%s\",\"n_new\":%d,\"threads\":%d,\"load1\":%.2f,\"runs\":[", model,
               n_new, threads > 0 ? threads : (int)cores, load[0]);
    }
    for (int i = 0; i < n_conc; i++) {
        int64_t tb = 0, ts = 0;
        double db = 0, ds = 0;
        double batched = run(model, threads, concs[i], concs[i], n_new, &tb, &db);
        double serial = run(model, threads, concs[i], 1, n_new, &ts, &ds);
        if (batched < 0 || serial < 0) {
            rc = 1;
            break;
        }
        if (json) {
            printf("%s{\"chats\":%d,\"batched_tok_s\":%.2f,\"serial_tok_s\":%.2f,"
                   "\"decode_batched_tok_s\":%.2f,\"decode_serial_tok_s\":%.2f,"
                   "\"tokens\":%lld}",
                   i ? "," : "", concs[i], batched, serial, db, ds, (long long)tb);
        } else {
            printf("%-6d %14.2f %14.2f %7.2fx   %14.2f %14.2f %7.2fx\n", concs[i], batched,
                   serial, batched / serial, db, ds, db / ds);
        }
        fflush(stdout);
    }
    if (json) {
        printf("]}\n");
    }
    if (made) {
        unlink(path);
        rmdir(tmpdir);
    }
    return rc;
}
