/* `wye bench`: prompt-processing and generation speed of a local model (min/median/max over
 * runs), and generation's weight-read bandwidth next to the memory bandwidth measured in the
 * same run (a roofline fraction: decode is bound by reading every matrix once per token).
 * Main thread plus the compute pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "local-engine/eng_cli.h"
#include "local-engine/engine.h"
#include "local-engine/pool.h"
#include "local-engine/quant.h"

#define BENCH_RUNS_MAX 100

static void bench_usage(FILE *out)
{
    fprintf(out, "usage: wye bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [-s 1] [--json]\n"
                 "                 [--membw-mib 256] [--kv f32|f16]\n\n"
                 "Measures prompt processing (-p tokens in one pass) and generation (-n tokens,\n"
                 "one at a time) in tokens/s over -r runs, and the weight bytes read per\n"
                 "generated token against the memory bandwidth measured over a --membw-mib buffer\n"
                 "just before each run (the roofline fraction is the median of the runs' own).\n"
                 "With -s N > 1, also N sequences generating together (continuous batching).\n"
                 "--kv: what the KV cache stores (default f32; f16 halves it).\n"
                 "Also reports the CPU time a hypervisor stole during generation (/proc/stat):\n"
                 "above a few percent, the figures measure the neighbours as well.\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static enum eng_cb_ret count_token(void *arg, int32_t id)
{
    (void)id;
    (*(long *)arg)++;
    return ENG_CB_CONTINUE;
}

/* n_seq sequences (prompts of p tokens, shifted so that none is a prefix of another)
 * generating n tokens each through eng_batch_step: tokens/s over all of them, timed from
 * the moment every prompt has been read. */
static enum wye_err batched_run(struct eng_ctx *c, const int32_t *toks, long p, long n, long n_seq,
                                double *tok_s)
{
    static const struct eng_seq_ops ops = {.on_token = count_token};
    struct eng_gen_params gp;
    memset(&gp, 0, sizeof(gp));
    eng_sampler_params_greedy(&gp.sampling);
    gp.max_tokens = (int32_t)n;
    gp.ignore_eos = true;
    long count = 0;
    char err[256];
    for (long i = 0; i < n_seq; i++) {
        int32_t id;
        enum wye_err e =
            eng_batch_add(c, toks + i, (size_t)p, &gp, &ops, &count, NULL, &id, err, sizeof(err));
        if (e) {
            return e;
        }
    }
    enum wye_err e = WYE_OK;
    while (!e && count < n_seq && eng_batch_n_active(c) > 0) {
        e = eng_batch_step(c);
    }
    long c0 = count;
    int64_t t0 = wye_now_ns();
    while (!e && eng_batch_n_active(c) > 0) {
        e = eng_batch_step(c);
    }
    int64_t t1 = wye_now_ns();
    *tok_s = (double)(count - c0) / ((double)(t1 - t0) / 1e9);
    return e;
}

int eng_cli_bench(int argc, char **argv)
{
    const char *path = NULL;
    long t = 2, p = 128, n = 64, r = 3, bw_mib = 256, n_seq = 1;
    bool json = false;
    enum eng_kv_type kv = ENG_KV_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
            continue;
        } else if (!v) {
            ok = false;
        } else if (strcmp(a, "-m") == 0) {
            path = v;
        } else if (strcmp(a, "-t") == 0) {
            ok = eng_cli_parse_long(v, 1, 256, &t);
        } else if (strcmp(a, "-p") == 0) {
            ok = eng_cli_parse_long(v, 1, 8192, &p);
        } else if (strcmp(a, "-n") == 0) {
            ok = eng_cli_parse_long(v, 1, 8192, &n);
        } else if (strcmp(a, "-r") == 0) {
            ok = eng_cli_parse_long(v, 1, BENCH_RUNS_MAX, &r);
        } else if (strcmp(a, "-s") == 0) {
            ok = eng_cli_parse_long(v, 1, 64, &n_seq);
        } else if (strcmp(a, "--membw-mib") == 0) {
            ok = eng_cli_parse_long(v, 1, 1 << 16, &bw_mib);
        } else if (strcmp(a, "--kv") == 0) {
            ok = eng_kv_type_parse(v, &kv);
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "wye bench: bad option or value: %s\n", a);
            bench_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!path) {
        bench_usage(stderr);
        return 2;
    }
    int rc = 1;
    char err[512];
    struct eng_model *m = NULL;
    struct eng_ctx *c = NULL;
    struct eng_pool *pool = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    enum wye_err e = eng_model_load(path, &m, err, sizeof(err));
    if (e) {
        fprintf(stderr, "wye bench: %s\n", err);
        goto done;
    }
    struct eng_model_info info;
    eng_model_get_info(m, &info);
    pool = eng_pool_create((int)t);
    toks = wye_malloc((size_t)(p + n + n_seq) * sizeof(int32_t));
    logits = wye_malloc((size_t)info.n_vocab * sizeof(float));
    if (!pool || !toks || !logits) {
        fprintf(stderr, "wye bench: out of memory or threads\n");
        goto done;
    }
    struct eng_ctx_params cp = {.n_ctx = (int32_t)(p + n),
                                .n_seq_max = (int32_t)n_seq,
                                .n_batch = (int32_t)(p < 512 ? p : 512),
                                .pool = pool,
                                .kv_type = kv};
    if ((e = eng_ctx_create(m, &cp, &c, err, sizeof(err)))) {
        fprintf(stderr, "wye bench: %s\n", err);
        goto done;
    }
    uint64_t rs = 12345;
    for (long i = 0; i < p + n + n_seq; i++) {
        rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
        toks[i] = (int32_t)((rs >> 33) % (uint64_t)(info.n_vocab > 2 ? info.n_vocab - 2 : 1)) + 1;
    }
    double pp[BENCH_RUNS_MAX], tg[BENCH_RUNS_MAX], bw[BENCH_RUNS_MAX], fr[BENCH_RUNS_MAX];
    /* CPU steal during the generation phases: all of them, and the worst run */
    double steal_max = -1.0;
    uint64_t steal_ticks = 0, all_ticks = 0;
    bool steal_known = true;
    double bytes_tok = (double)info.matrix_bytes;
    /* One warm-up pass pages the weights in. */
    eng_ctx_eval(c, 0, 0, toks, 1, logits);
    for (long run = 0; run < r; run++) {
        /* The bandwidth just before each run, so that each run's roofline fraction compares
         * it with the machine as it was then (other load moves both within seconds). */
        bw[run] = eng_membw_measure(pool, (size_t)bw_mib << 20);
        int64_t t0 = wye_now_ns();
        e = eng_ctx_eval(c, 0, 0, toks, (size_t)p, logits);
        struct wye_cpu_ticks c1, c2;
        steal_known &= wye_cpu_ticks_read(&c1);
        int64_t t1 = wye_now_ns();
        for (long j = 0; j < n && !e; j++) {
            e = eng_ctx_eval(c, 0, (int32_t)(p + j), toks + p + j, 1, logits);
        }
        int64_t t2 = wye_now_ns();
        steal_known &= wye_cpu_ticks_read(&c2);
        double sf = wye_cpu_steal_fraction(&c1, &c2);
        if (steal_known && sf >= 0) { /* -1: no tick passed, or a reading went backwards */
            steal_ticks += c2.steal - c1.steal;
            all_ticks += c2.total - c1.total;
            steal_max = sf > steal_max ? sf : steal_max;
        }
        if (e) {
            fprintf(stderr, "wye bench: %s\n", wye_err_str(e));
            goto done;
        }
        pp[run] = (double)p / ((double)(t1 - t0) / 1e9);
        tg[run] = (double)n / ((double)(t2 - t1) / 1e9);
        fr[run] = bw[run] > 0 ? bytes_tok * tg[run] / bw[run] : 0.0;
    }
    double tgb[BENCH_RUNS_MAX] = {0};
    for (long run = 0; n_seq > 1 && run < r; run++) {
        if ((e = batched_run(c, toks, p, n, n_seq, &tgb[run]))) {
            fprintf(stderr, "wye bench: batched generation: %s\n", wye_err_str(e));
            goto done;
        }
    }
    qsort(tgb, (size_t)r, sizeof(double), cmp_double);
    qsort(pp, (size_t)r, sizeof(double), cmp_double);
    qsort(tg, (size_t)r, sizeof(double), cmp_double);
    qsort(bw, (size_t)r, sizeof(double), cmp_double);
    qsort(fr, (size_t)r, sizeof(double), cmp_double);
    double pp_med = pp[r / 2], tg_med = tg[r / 2], membw = bw[r / 2];
    double achieved = bytes_tok * tg_med;
    double frac = fr[r / 2]; /* the median of the runs' own fractions */
    /* the median generation against the highest bandwidth figure: the stricter reading */
    double frac_best = bw[r - 1] > 0 ? achieved / bw[r - 1] : 0.0;
    /* -1: unknown (no /proc/stat, or runs too short for a clock tick) */
    double steal = steal_known && all_ticks > 0 ? (double)steal_ticks / (double)all_ticks : -1.0;
    if (json) {
        printf("{\"model\": \"%s\", \"arch\": \"%s\", \"kernels\": \"%s\", \"threads\": %ld, "
               "\"pp_tokens\": %ld, \"tg_tokens\": %ld, \"runs\": %ld, "
               "\"pp_tok_s\": %.2f, \"pp_tok_s_min\": %.2f, \"pp_tok_s_max\": %.2f, "
               "\"tg_tok_s\": %.2f, \"tg_tok_s_min\": %.2f, \"tg_tok_s_max\": %.2f, "
               "\"weight_bytes_per_token\": %.0f, \"tg_read_bytes_s\": %.0f, "
               "\"membw_bytes_s\": %.0f, \"membw_bytes_s_min\": %.0f, \"membw_bytes_s_max\": %.0f, "
               "\"roofline_fraction\": %.3f, \"roofline_fraction_min\": %.3f, "
               "\"roofline_fraction_max\": %.3f, \"roofline_fraction_vs_best_membw\": %.3f, "
               "\"seqs\": %ld, \"tg_batch_tok_s\": %.2f, \"repacked_bytes\": %zu, "
               "\"copied_bytes\": %zu, \"kv\": \"%s\", \"tg_cpu_steal\": %.3f, "
               "\"tg_cpu_steal_max\": %.3f}\n",
               path, info.arch, eng_kernels_name(), t, p, n, r, pp_med, pp[0], pp[r - 1], tg_med,
               tg[0], tg[r - 1], bytes_tok, achieved, membw, bw[0], bw[r - 1], frac, fr[0],
               fr[r - 1], frac_best, n_seq, n_seq > 1 ? tgb[r / 2] : tg_med, info.repacked_bytes,
               info.copied_bytes, eng_kv_type_name(kv), steal, steal_known ? steal_max : -1.0);
    } else {
        printf("model %s (%s, %d layers, n_embd %d), kernels %s%s, %ld threads, %ld runs, "
               "KV cache %s\n",
               path, info.arch, info.n_layer, info.n_embd, eng_kernels_name(),
               info.repacked_bytes ? " (Q4_0 repacked by 8 rows)" : "", t, r, eng_kv_type_name(kv));
        printf("prompt processing (%ld tokens): %.1f tok/s (min %.1f, max %.1f)\n", p, pp_med,
               pp[0], pp[r - 1]);
        printf("generation (%ld tokens):        %.2f tok/s (min %.2f, max %.2f)\n", n, tg_med,
               tg[0], tg[r - 1]);
        printf("weights read per token: %.1f MiB -> %.2f GB/s; memory bandwidth %.2f GB/s "
               "(min %.2f, max %.2f, measured before each run); roofline %.0f%% (min %.0f%%, "
               "max %.0f%%; %.0f%% against the highest bandwidth)\n",
               bytes_tok / 1048576.0, achieved / 1e9, membw / 1e9, bw[0] / 1e9, bw[r - 1] / 1e9,
               100.0 * frac, 100.0 * fr[0], 100.0 * fr[r - 1], 100.0 * frac_best);
        if (steal >= 0) {
            printf("cpu steal during generation: %.1f%% of the machine's CPU time (worst run "
                   "%.1f%%)%s\n",
                   100.0 * steal, 100.0 * steal_max,
                   steal > 0.02 ? "; a busy hypervisor: the figures measure its other guests too"
                                : "");
        }
        if (n_seq > 1) {
            printf("batched generation (%ld sequences): %.2f tok/s in all (min %.2f, max %.2f)\n",
                   n_seq, tgb[r / 2], tgb[0], tgb[r - 1]);
        }
    }
    rc = 0;
done:
    eng_ctx_destroy(c);
    eng_pool_destroy(pool);
    eng_model_destroy(m);
    wye_free(toks);
    wye_free(logits);
    return rc;
}
