/* `wye route`: train the complexity score on labeled JSONL, score prompts, and evaluate (AUC,
 * accuracy, per-source results, call-performance, k-fold and leave-one-source-out CV).
 * Input lines are capped at 1 MiB. Malformed lines are fatal for train and eval (a model fit
 * on silently partial data is worse than none) and reported-and-skipped for score (which exits
 * 1 at the end if any were skipped). Runs on main's thread only. */
#include <cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "conf/conf.h"
#include "router/policy.h"
#include "router/score.h"
#include "router/score_train.h"

#define LINE_MAX_BYTES (1024 * 1024)
#define ROWS_MAX 1000000
#define SOURCES_MAX 256
#define WEIGHTS_FILE_MAX (64 * 1024)

/* ---- JSONL input ---- */

struct lines {
    FILE *f;
    const char *name;
    char *buf; /* LINE_MAX_BYTES + 2 */
    long lineno;
};

/* Reads the next line into l->buf. 1: a line; 0: end of input; -1: the line was too long
 * (skipped to its end). */
static int lines_next(struct lines *l)
{
    if (!fgets(l->buf, LINE_MAX_BYTES + 2, l->f)) {
        return 0;
    }
    l->lineno++;
    size_t n = strlen(l->buf);
    if (n > 0 && l->buf[n - 1] == '\n') {
        l->buf[--n] = '\0';
        return 1;
    }
    if (n <= LINE_MAX_BYTES) {
        return 1; /* the last line, without a newline */
    }
    int c;
    while ((c = fgetc(l->f)) != EOF && c != '\n') {
    }
    return -1;
}

static bool blank(const char *s)
{
    for (; *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\r') {
            return false;
        }
    }
    return true;
}

/* One parsed input line. */
struct item {
    cJSON *root;     /* owned until features are taken */
    const cJSON *id; /* borrowed from root, may be NULL */
    int label;       /* 1 remote, 0 local, -1 none/other */
    char source[64]; /* "" when absent */
    struct rt_features f;
};

/* Parses a line into it: features from "prompt" (one user message) or "messages" (an OpenAI
 * chat body). On error writes the problem into err. Frees nothing on success (it->root). */
static enum wye_err item_parse(const char *line, struct item *it, char *err, size_t errlen)
{
    memset(it, 0, sizeof(*it));
    it->label = -1;
    it->root = cJSON_Parse(line);
    if (!it->root) {
        snprintf(err, errlen, "invalid JSON");
        return WYE_ERR_PARSE;
    }
    if (!cJSON_IsObject(it->root)) {
        snprintf(err, errlen, "expected a JSON object");
        return WYE_ERR_INVAL;
    }
    it->id = cJSON_GetObjectItemCaseSensitive(it->root, "id");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(it->root, "label");
    if (cJSON_IsString(lab)) {
        it->label = strcmp(lab->valuestring, "remote") == 0  ? 1
                    : strcmp(lab->valuestring, "local") == 0 ? 0
                                                             : -1;
    }
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(it->root, "source");
    if (cJSON_IsString(src)) {
        snprintf(it->source, sizeof(it->source), "%s", src->valuestring);
    }
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(it->root, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(it->root, "messages");
    if (cJSON_IsString(prompt)) {
        rt_features_extract_text(prompt->valuestring, strlen(prompt->valuestring), &it->f);
        return WYE_OK;
    }
    if (!msgs) {
        snprintf(err, errlen, "needs a string 'prompt' or a 'messages' array");
        return WYE_ERR_INVAL;
    }
    /* The chat parser takes ownership of the body it is given: hand it a copy. */
    cJSON *body = cJSON_Duplicate(it->root, 1);
    if (!body) {
        snprintf(err, errlen, "out of memory");
        return WYE_ERR_NOMEM;
    }
    static const struct wye_chat_limits lim = {
        .depth_max = 64, .n_msgs_max = 4096, .max_tokens_max = 1 << 24};
    struct wye_chat_req *req;
    enum wye_err e = wye_chat_req_from_json(body, &lim, &req, err, errlen);
    if (e) {
        return e;
    }
    rt_features_extract(req, &it->f);
    wye_chat_req_destroy(req);
    return WYE_OK;
}

/* ---- labeled datasets ---- */

struct dataset {
    struct rt_features *x;
    unsigned char *y;
    int *src; /* index into names */
    size_t n, cap;
    char *names[SOURCES_MAX];
    int n_src;
};

static void dataset_cleanup(struct dataset *d)
{
    wye_free(d->x);
    wye_free(d->y);
    wye_free(d->src);
    for (int i = 0; i < d->n_src; i++) {
        wye_free(d->names[i]);
    }
    memset(d, 0, sizeof(*d));
}

static int dataset_source(struct dataset *d, const char *name)
{
    for (int i = 0; i < d->n_src; i++) {
        if (strcmp(d->names[i], name) == 0) {
            return i;
        }
    }
    if (d->n_src == SOURCES_MAX) {
        return -2;
    }
    d->names[d->n_src] = wye_strdup(name);
    return d->names[d->n_src] ? d->n_src++ : -1;
}

static int dataset_push(struct dataset *d, const struct item *it, int src)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        struct rt_features *x = wye_realloc(d->x, cap * sizeof(*x));
        if (x) {
            d->x = x;
        }
        unsigned char *y = wye_realloc(d->y, cap);
        if (y) {
            d->y = y;
        }
        int *s = wye_realloc(d->src, cap * sizeof(int));
        if (s) {
            d->src = s;
        }
        if (!x || !y || !s) {
            return -1;
        }
        d->cap = cap;
    }
    d->x[d->n] = it->f;
    d->y[d->n] = (unsigned char)it->label;
    d->src[d->n] = src;
    d->n++;
    return 0;
}

/* Loads a labeled JSONL file; every problem is fatal and printed with its line number. */
static int dataset_load(const char *path, struct dataset *d)
{
    memset(d, 0, sizeof(*d));
    struct lines l = {.name = path};
    l.f = fopen(path, "r");
    if (!l.f) {
        fprintf(stderr, "wye route: cannot open %s: %m\n", path);
        return -1;
    }
    l.buf = wye_malloc(LINE_MAX_BYTES + 2);
    int rc = l.buf ? 0 : -1;
    int r;
    while (rc == 0 && (r = lines_next(&l)) != 0) {
        char err[256] = "";
        struct item it;
        if (r < 0) {
            fprintf(stderr, "wye route: %s:%ld: line longer than 1 MiB\n", path, l.lineno);
            rc = -1;
            break;
        }
        if (blank(l.buf)) {
            continue;
        }
        enum wye_err e = item_parse(l.buf, &it, err, sizeof(err));
        if (!e && it.label < 0) {
            snprintf(err, sizeof(err), "'label' must be \"local\" or \"remote\"");
            e = WYE_ERR_INVAL;
        }
        int src = e ? -1 : dataset_source(d, it.source[0] ? it.source : "(none)");
        if (!e && src == -2) {
            snprintf(err, sizeof(err), "more than %d distinct sources", SOURCES_MAX);
            e = WYE_ERR_TOOBIG;
        } else if (!e && (src < 0 || d->n >= ROWS_MAX || dataset_push(d, &it, src) != 0)) {
            snprintf(err, sizeof(err),
                     d->n >= ROWS_MAX ? "more than 1,000,000 rows" : "out of memory");
            e = WYE_ERR_NOMEM;
        }
        cJSON_Delete(it.root);
        if (e) {
            fprintf(stderr, "wye route: %s:%ld: %s\n", path, l.lineno, err);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(l.f)) {
        fprintf(stderr, "wye route: error reading %s\n", path);
        rc = -1;
    }
    if (rc == 0 && d->n == 0) {
        fprintf(stderr, "wye route: %s: no labeled lines\n", path);
        rc = -1;
    }
    wye_free(l.buf);
    fclose(l.f);
    if (rc) {
        dataset_cleanup(d);
    }
    return rc;
}

/* ---- weights files ---- */

static int weights_load(const char *path, struct rt_score_model *m)
{
    char err[256];
    enum wye_err e;
    if (!path) {
        e = rt_score_model_default(m, err, sizeof(err));
        if (e) {
            fprintf(stderr, "wye route: embedded weights: %s\n", err);
            return -1;
        }
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "wye route: cannot open %s: %m\n", path);
        return -1;
    }
    char *text = wye_malloc(WEIGHTS_FILE_MAX + 1);
    size_t n = text ? fread(text, 1, WEIGHTS_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!text) {
        fprintf(stderr, "wye route: out of memory\n");
        return -1;
    }
    e = rt_score_model_load_json(text, n, m, err, sizeof(err));
    wye_free(text);
    if (e) {
        fprintf(stderr, "wye route: %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static int weights_save(const struct rt_score_model *m, const char *path)
{
    char *text;
    if (rt_score_model_to_json(m, &text) != WYE_OK) {
        fprintf(stderr, "wye route: out of memory\n");
        return -1;
    }
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!f) {
        fprintf(stderr, "wye route: cannot create %s: %m\n", path);
        wye_free(text);
        return -1;
    }
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len;
    ok &= f == stdout ? fflush(f) == 0 : fclose(f) == 0;
    wye_free(text);
    if (!ok) {
        fprintf(stderr, "wye route: cannot write %s: %m\n", path);
        return -1;
    }
    return 0;
}

/* ---- options shared by train and eval ---- */

/* Applies --only/--drop lists (comma-separated feature names) to o->use. */
static int select_features(struct rt_train_opts *o, const char *list, bool only)
{
    char buf[1024];
    if (strlen(list) >= sizeof(buf)) {
        fprintf(stderr, "wye route: feature list too long\n");
        return -1;
    }
    strcpy(buf, list);
    if (only) {
        for (int i = 0; i < RT_F__COUNT; i++) {
            o->use[i] = false;
        }
    }
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int i = rt_feature_index(t);
        if (i < 0) {
            fprintf(stderr, "wye route: unknown feature '%s' (see docs/routing.md)\n", t);
            return -1;
        }
        o->use[i] = only;
    }
    return 0;
}

static int parse_double(const char *s, const char *what, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "wye route: %s must be a number in [%g, %g], got '%s'\n", what, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- evaluation report ---- */

struct report {
    size_t n, n_pos;
    double auc, acc, bacc, call95, threshold;
};

/* th_from: where the threshold came from ("weights", "config", "command line"), NULL for CV. */
static int evaluate(const struct dataset *d, const float *sc, const unsigned char *dec,
                    const char *what, double threshold, const char *th_from, bool json)
{
    struct report r = {.n = d->n, .threshold = threshold};
    double tp = 0, tn = 0;
    for (size_t i = 0; i < d->n; i++) {
        r.n_pos += d->y[i];
        tp += d->y[i] && dec[i];
        tn += !d->y[i] && !dec[i];
    }
    if (rt_eval_auc(sc, d->y, d->n, &r.auc) ||
        rt_eval_call_fraction(sc, d->y, d->n, 0.95, &r.call95)) {
        fprintf(stderr, "wye route: out of memory\n");
        return -1;
    }
    size_t n_neg = r.n - r.n_pos;
    r.acc = (tp + tn) / (double)r.n;
    r.bacc = 0.5 * ((r.n_pos ? tp / (double)r.n_pos : 0) + (n_neg ? tn / (double)n_neg : 0));
    /* Random routing keeps quality q with fraction f remote: q = f + (1-f) * local share. */
    double local_share = (double)n_neg / (double)r.n;
    double random95 = local_share >= 0.95 ? 0 : (0.95 - local_share) / (1 - local_share);
    if (json) {
        char th[32];
        snprintf(th, sizeof(th), isnan(threshold) ? "null" : "%.4f", threshold);
        printf("{\"evaluation\":\"%s\",\"n\":%zu,\"n_remote\":%zu,\"auc\":%.4f,"
               "\"accuracy\":%.4f,\"balanced_accuracy\":%.4f,\"threshold\":%s,"
               "\"threshold_source\":%s%s%s,"
               "\"call_fraction_95\":%.4f,\"call_fraction_95_random\":%.4f,\"sources\":[",
               what, r.n, r.n_pos, r.auc, r.acc, r.bacc, th, th_from ? "\"" : "",
               th_from ? th_from : "null", th_from ? "\"" : "", r.call95, random95);
    } else {
        printf("evaluation    %s\n", what);
        printf("examples      %zu (%zu remote, %zu local)\n", r.n, r.n_pos, n_neg);
        printf("auc           %.4f\n", r.auc);
        if (isnan(threshold)) {
            printf("accuracy      %.4f (balanced %.4f) at each fold's own threshold\n", r.acc,
                   r.bacc);
        } else {
            printf("accuracy      %.4f (balanced %.4f) at threshold %.4f (from the %s)\n", r.acc,
                   r.bacc, threshold, th_from ? th_from : "weights");
        }
        printf("call@95%%      %.4f of requests remote keep 95%% of all-remote quality "
               "(random routing: %.4f)\n\n",
               r.call95, random95);
        printf("%-30s %5s %7s %9s %7s %7s\n", "source", "n", "remote", "accuracy", "auc", "mean");
    }
    float *ssc = wye_malloc(d->n * sizeof(float));
    unsigned char *sy = wye_malloc(d->n);
    if (!ssc || !sy) {
        wye_free(ssc);
        wye_free(sy);
        fprintf(stderr, "wye route: out of memory\n");
        return -1;
    }
    for (int s = 0; s < d->n_src; s++) {
        size_t m = 0, pos = 0, ok = 0;
        double mean = 0;
        for (size_t i = 0; i < d->n; i++) {
            if (d->src[i] == s) {
                ssc[m] = sc[i];
                sy[m] = d->y[i];
                pos += d->y[i];
                ok += d->y[i] == dec[i];
                mean += sc[i];
                m++;
            }
        }
        double auc = NAN;
        rt_eval_auc(ssc, sy, m, &auc); /* NOMEM leaves NAN */
        if (json) {
            printf("%s{\"source\":", s ? "," : "");
            struct wye_buf b;
            wye_buf_init(&b, 4096);
            wye_buf_append_json_str(&b, d->names[s], strlen(d->names[s]));
            printf("%s", b.data ? b.data : "\"\"");
            wye_buf_cleanup(&b);
            printf(",\"n\":%zu,\"n_remote\":%zu,\"accuracy\":%.4f,", m, pos,
                   (double)ok / (double)m);
            if (isnan(auc)) {
                printf("\"auc\":null,");
            } else {
                printf("\"auc\":%.4f,", auc);
            }
            printf("\"mean_score\":%.4f}", mean / (double)m);
        } else {
            char a[16];
            snprintf(a, sizeof(a), isnan(auc) ? "-" : "%.3f", auc);
            printf("%-30s %5zu %7zu %9.3f %7s %7.3f\n", d->names[s], m, pos, (double)ok / (double)m,
                   a, mean / (double)m);
        }
    }
    if (json) {
        printf("]}\n");
    }
    wye_free(ssc);
    wye_free(sy);
    return 0;
}

/* ---- subcommands ---- */

static void usage_route(FILE *out)
{
    fprintf(out,
            "usage: wye route train DATA.jsonl -o FILE [--l2 L] [--epochs N] [--all] [--only F,..] "
            "[--drop F,..]\n"
            "       wye route score [-c CONF] [--weights FILE] [--threshold T] < PROMPTS.jsonl\n"
            "       wye route eval DATA.jsonl [-c CONF] [--weights FILE] [--threshold T] [--json]\n"
            "       wye route eval DATA.jsonl --cv K|source [--l2 L] [--epochs N] [--all] "
            "[--only F,..] [--drop F,..] [--json]\n"
            "       wye route features [--json] [DATA.jsonl]\n\n"
            "Trains, applies and evaluates the request complexity score (docs/routing.md).\n"
            "DATA lines: {\"prompt\": TEXT | \"messages\": [...], \"label\": \"local\"|\"remote\", "
            "\"source\": NAME}.\n"
            "PROMPTS lines: {\"id\": ID, \"prompt\": TEXT} or an OpenAI chat body with "
            "\"messages\".\n\n"
            "  -o, --output FILE    train: where to write the weights JSON ('-': stdout)\n"
            "  --l2 L               L2 penalty on standardised weights (default %g)\n"
            "  --epochs N           Newton iterations at most (default 50)\n"
            "  --only F,..          train on these features only\n"
            "  --drop F,..          train without these features (besides the default ones)\n"
            "  --all                start from every feature (the default leaves out the ones "
            "cross-validation dropped)\n"
            "  -w, --weights FILE   weights JSON (default: the weights compiled in)\n"
            "  -c, --config CONF    score, eval: use the config's router.weights and\n"
            "                       router.threshold (unset: the weights' own), as the gateway\n"
            "                       does; --weights/--threshold override\n"
            "  --threshold T        score, eval: decide at T instead of the weights' threshold\n"
            "  --cv K|source        eval: K-fold (rows i%%K) or leave-one-source-out "
            "cross-validation of the training procedure\n"
            "  --json               eval: one JSON object instead of a table\n"
            "Lines are capped at 1 MiB; a malformed line is fatal for train and eval, reported "
            "and skipped by score (exit status 1).\n",
            RT_TRAIN_L2_DEFAULT);
}

struct args {
    const char *data, *output, *weights, *cv, *config;
    struct rt_train_opts opts;
    double threshold; /* < 0: from the weights */
    bool json;
};

static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"weights", required_argument, NULL, 'w'},
        {"l2", required_argument, NULL, 'l'},
        {"epochs", required_argument, NULL, 'e'},
        {"only", required_argument, NULL, 'O'},
        {"drop", required_argument, NULL, 'D'},
        {"cv", required_argument, NULL, 'V'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"threshold", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"all", no_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    rt_train_opts_default(&a->opts);
    a->threshold = -1;
    optind = 1;
    opterr = 1;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "o:w:c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->output = optarg;
            break;
        case 'w':
            a->weights = optarg;
            break;
        case 'l':
            if (parse_double(optarg, "--l2", 0, 1e9, &a->opts.l2)) {
                return 2;
            }
            break;
        case 'e':
            if (parse_double(optarg, "--epochs", 1, 10000, &v)) {
                return 2;
            }
            a->opts.iters = (int)v;
            break;
        case 'O':
        case 'D':
            if (select_features(&a->opts, optarg, c == 'O')) {
                return 2;
            }
            break;
        case 'c':
            a->config = optarg;
            break;
        case 'V':
            a->cv = optarg;
            break;
        case 'a':
            for (int i = 0; i < RT_F__COUNT; i++) {
                a->opts.use[i] = true;
            }
            break;
        case 'j':
            a->json = true;
            break;
        case 't':
            if (parse_double(optarg, "--threshold", 0, 1, &a->threshold)) {
                return 2;
            }
            break;
        case 'h':
            usage_route(stdout);
            return 1;
        default:
            usage_route(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        a->data = argv[optind++];
    }
    if (optind < argc) {
        fprintf(stderr, "wye route: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* The model score and eval decide with, as the gateway would: --weights, else the config's
 * router.weights, else the embedded weights; --threshold, else the config's router.threshold
 * (rt_policy_threshold: unset means the weights' own), else the weights' own. *from says which
 * threshold won. 0, 1 (bad weights) or 2 (a config that does not load). */
static int model_resolve(const struct args *a, const char *cmd, struct rt_score_model *m,
                         const char **from)
{
    const char *weights = a->weights;
    struct conf_config *cfg = NULL;
    if (a->config) {
        char err[512] = "";
        if (conf_load(a->config, NULL, &cfg, err, sizeof(err)) != WYE_OK) {
            fprintf(stderr, "wye route %s: %s: %s\n", cmd, a->config, err);
            return 2;
        }
        if (!weights) {
            weights = cfg->router.weights_path;
        }
    }
    if (weights_load(weights, m)) {
        conf_destroy(cfg);
        return 1;
    }
    *from = "weights";
    if (a->threshold >= 0) {
        m->threshold = (float)a->threshold;
        *from = "command line";
    } else if (cfg && cfg->router.threshold >= 0) {
        m->threshold = (float)rt_policy_threshold(&cfg->router, m);
        *from = "config";
    }
    conf_destroy(cfg);
    return 0;
}

static int cmd_train(struct args *a)
{
    struct dataset d;
    struct rt_score_model m;
    if (!a->data || !a->output) {
        fprintf(stderr, "wye route train: needs DATA.jsonl and -o FILE (see --help)\n");
        return 2;
    }
    if (dataset_load(a->data, &d)) {
        return 1;
    }
    enum wye_err e = rt_score_train(d.x, d.y, d.n, &a->opts, &m);
    dataset_cleanup(&d);
    if (e) {
        fprintf(stderr, "wye route train: %s\n",
                e == WYE_ERR_INVAL ? "the data needs both local and remote examples"
                                   : wye_err_str(e));
        return 1;
    }
    return weights_save(&m, a->output) ? 1 : 0;
}

/* Out-of-fold scores and decisions for K-fold (fold = row % K) or leave-one-source-out. */
static int cross_validate(const struct dataset *d, const struct args *a, float *sc,
                          unsigned char *dec)
{
    bool by_source = strcmp(a->cv, "source") == 0;
    double k = 0;
    if (!by_source && parse_double(a->cv, "--cv", 2, 100, &k)) {
        return 2;
    }
    int n_folds = by_source ? d->n_src : (int)k;
    struct rt_features *x = wye_malloc(d->n * sizeof(*x));
    unsigned char *y = wye_malloc(d->n);
    int rc = x && y ? 0 : 1;
    for (int f = 0; rc == 0 && f < n_folds; f++) {
        size_t m = 0;
        for (size_t i = 0; i < d->n; i++) {
            int fold = by_source ? d->src[i] : (int)(i % (size_t)n_folds);
            if (fold != f) {
                x[m] = d->x[i];
                y[m++] = d->y[i];
            }
        }
        struct rt_score_model model;
        if (rt_score_train(x, y, m, &a->opts, &model) != WYE_OK) {
            fprintf(stderr, "wye route eval: fold %d has a single class or ran out of memory\n", f);
            rc = 1;
            break;
        }
        for (size_t i = 0; i < d->n; i++) {
            int fold = by_source ? d->src[i] : (int)(i % (size_t)n_folds);
            if (fold == f) {
                struct rt_score_result r;
                rt_score(&model, &d->x[i], 0, &r);
                sc[i] = r.score;
                dec[i] = r.remote;
            }
        }
    }
    wye_free(x);
    wye_free(y);
    return rc;
}

static int cmd_eval(struct args *a)
{
    struct dataset d;
    struct rt_score_model m;
    if (!a->data) {
        fprintf(stderr, "wye route eval: needs DATA.jsonl (see --help)\n");
        return 2;
    }
    const char *th_from = NULL;
    if (a->cv && (a->config || a->weights || a->threshold >= 0)) {
        fprintf(stderr, "wye route eval: --cv trains its own weights and thresholds; -c, "
                        "--weights and --threshold do not apply\n");
        return 2;
    }
    if (!a->cv) {
        int rc = model_resolve(a, "eval", &m, &th_from);
        if (rc) {
            return rc;
        }
    }
    if (dataset_load(a->data, &d)) {
        return 1;
    }
    float *sc = wye_malloc(d.n * sizeof(float));
    unsigned char *dec = wye_malloc(d.n);
    int rc = sc && dec ? 0 : 1;
    char what[64];
    double threshold = NAN;
    if (rc == 0 && a->cv) {
        rc = cross_validate(&d, a, sc, dec);
        snprintf(what, sizeof(what), "cross-validation (%s%s)", a->cv,
                 strcmp(a->cv, "source") == 0 ? "" : " folds");
    } else if (rc == 0) {
        for (size_t i = 0; i < d.n; i++) {
            struct rt_score_result r;
            rt_score(&m, &d.x[i], 0, &r);
            sc[i] = r.score;
            dec[i] = r.remote;
        }
        threshold = m.threshold;
        snprintf(what, sizeof(what), "%s", a->weights ? a->weights : "embedded weights");
    }
    if (rc == 0) {
        rc = evaluate(&d, sc, dec, what, threshold, th_from, a->json) ? 1 : 0;
    }
    wye_free(sc);
    wye_free(dec);
    dataset_cleanup(&d);
    return rc;
}

static int print_score_line(const struct item *it, const struct rt_score_model *m)
{
    struct rt_score_result r;
    char reasons[512];
    struct wye_buf b;
    rt_score(m, &it->f, 3, &r);
    rt_score_reasons_json(&r, reasons, sizeof(reasons));
    wye_buf_init(&b, LINE_MAX_BYTES);
    enum wye_err e = wye_buf_append_str(&b, "{\"id\":");
    if (!e && cJSON_IsString(it->id)) {
        e = wye_buf_append_json_str(&b, it->id->valuestring, strlen(it->id->valuestring));
    } else if (!e && cJSON_IsNumber(it->id)) {
        e = wye_buf_printf(&b, "%.17g", it->id->valuedouble);
    } else if (!e) {
        e = wye_buf_append_str(&b, "null");
    }
    if (!e) {
        e = wye_buf_printf(&b, ",\"score\":%.4f,\"route\":\"%s\",\"reasons\":%s}\n",
                           (double)r.score, r.remote ? "remote" : "local", reasons);
    }
    if (!e) {
        fwrite(b.data, 1, b.len, stdout);
    }
    wye_buf_cleanup(&b);
    return e ? -1 : 0;
}

static int cmd_score(struct args *a)
{
    struct rt_score_model m;
    if (a->data) {
        fprintf(stderr, "wye route score: reads prompts from stdin (see --help)\n");
        return 2;
    }
    const char *th_from = NULL;
    int rc = model_resolve(a, "score", &m, &th_from);
    if (rc) {
        return rc;
    }
    struct lines l = {.f = stdin, .name = "stdin"};
    l.buf = wye_malloc(LINE_MAX_BYTES + 2);
    if (!l.buf) {
        fprintf(stderr, "wye route: out of memory\n");
        return 1;
    }
    int r, bad = 0;
    while ((r = lines_next(&l)) != 0) {
        char err[256] = "";
        struct item it;
        if (r < 0) {
            fprintf(stderr, "wye route score: stdin:%ld: line longer than 1 MiB, skipped\n",
                    l.lineno);
            bad++;
            continue;
        }
        if (blank(l.buf)) {
            continue;
        }
        enum wye_err e = item_parse(l.buf, &it, err, sizeof(err));
        if (e) {
            fprintf(stderr, "wye route score: stdin:%ld: %s, skipped\n", l.lineno, err);
            bad++;
        } else if (print_score_line(&it, &m)) {
            fprintf(stderr, "wye route score: stdin:%ld: out of memory, skipped\n", l.lineno);
            bad++;
        }
        cJSON_Delete(it.root);
    }
    wye_free(l.buf);
    fflush(stdout);
    return bad ? 1 : 0;
}

/* Prints each line's features as JSON (for inspecting what the scanner sees). */
static int dump_features(const char *path)
{
    struct dataset d;
    if (dataset_load(path, &d)) {
        return 1;
    }
    for (size_t i = 0; i < d.n; i++) {
        printf("{\"label\":\"%s\",\"source\":\"%s\"", d.y[i] ? "remote" : "local",
               d.names[d.src[i]]);
        for (int f = 0; f < RT_F__COUNT; f++) {
            printf(",\"%s\":%.4g", rt_feature_name(f), (double)d.x[i].v[f]);
        }
        printf("}\n");
    }
    dataset_cleanup(&d);
    return 0;
}

static int cmd_features(const struct args *a)
{
    if (a->data) {
        return dump_features(a->data);
    }
    /* The feature names in model order, for --only/--drop and the docs. */
    if (a->json) {
        printf("[");
    }
    for (int i = 0; i < RT_F__COUNT; i++) {
        if (a->json) {
            printf("%s\"%s\"", i ? "," : "", rt_feature_name(i));
        } else {
            printf("%s\n", rt_feature_name(i));
        }
    }
    if (a->json) {
        printf("]\n");
    }
    return 0;
}

int rt_cli_route(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage_route(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    struct args a;
    int rc = parse_args(argc - 1, argv + 1, &a);
    if (rc) {
        return rc == 1 ? 0 : rc;
    }
    if (strcmp(sub, "train") == 0) {
        return cmd_train(&a);
    }
    if (strcmp(sub, "score") == 0) {
        return cmd_score(&a);
    }
    if (strcmp(sub, "eval") == 0) {
        return cmd_eval(&a);
    }
    if (strcmp(sub, "features") == 0) {
        return cmd_features(&a);
    }
    fprintf(stderr, "wye route: unknown subcommand '%s'\n\n", sub);
    usage_route(stderr);
    return 2;
}
