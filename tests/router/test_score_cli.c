/* `wye route` through the built binary: score prints one JSON line per prompt (prompt and
 * OpenAI messages inputs) and reports a malformed line by number, skips it and exits 1;
 * score and eval take the threshold from --threshold, else the config's router.threshold,
 * else the weights' own (-c CONF, as the gateway);
 * train and eval round trip on a small file; train refuses malformed data naming the line;
 * --help and unknown options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WYE WYE_BINARY_DIR "/wye"

struct run {
    int status;      /* exit status */
    char out[65536]; /* stdout */
    char err[4096];  /* stderr */
};

static char tmpdir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) {
        fclose(f);
    }
}

/* Runs "wye ARGS" with stdin from the file `in` (or /dev/null), collecting both outputs. */
static void run(const char *args, const char *in, struct run *r)
{
    char cmd[1024], errpath[128];
    snprintf(errpath, sizeof(errpath), "%s/stderr", tmpdir);
    snprintf(cmd, sizeof(cmd), "%s %s < %s 2> %s", WYE, args, in ? in : "/dev/null", errpath);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(r->out, 1, sizeof(r->out) - 1, p);
    r->out[n] = '\0';
    int st = pclose(p);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    read_file(errpath, r->err, sizeof(r->err));
}

static void test_score_lines(void **state)
{
    (void)state;
    char in[128];
    snprintf(in, sizeof(in), "%s/prompts.jsonl", tmpdir);
    write_file(in, "{\"id\":\"a\",\"prompt\":\"hi, how are you?\"}\n"
                   "\n"
                   "{\"id\":7,\"messages\":[{\"role\":\"system\",\"content\":\"be exact\"},"
                   "{\"role\":\"user\",\"content\":\"Prove that there are infinitely many primes "
                   "$p$ such that $p \\\\equiv 3 \\\\pmod 4$, and find all integers $n$ with "
                   "$n^2 + 1$ divisible by 3.\"}]}\n"
                   "{oops\n"
                   "{\"id\":\"no prompt\"}\n"
                   "{\"id\":\"last\",\"prompt\":\"Write a Python function that merges two sorted "
                   "lists.\"}");
    struct run r;
    run("route score", in, &r);
    assert_int_equal(r.status, 1); /* two lines were skipped */
    assert_non_null(strstr(r.err, "stdin:4: invalid JSON"));
    assert_non_null(strstr(r.err, "stdin:5: needs a string 'prompt' or a 'messages' array"));
    /* One output line per good input line, in order. */
    const char *want_id[] = {"a", "7", "last"};
    char *save = NULL;
    int n = 0;
    double scores[3] = {0};
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        assert_true(n < 3);
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        cJSON *id = cJSON_GetObjectItem(o, "id");
        if (n == 1) {
            assert_true(cJSON_IsNumber(id) && id->valuedouble == 7);
        } else {
            assert_string_equal(cJSON_GetStringValue(id), want_id[n]);
        }
        cJSON *score = cJSON_GetObjectItem(o, "score");
        assert_true(cJSON_IsNumber(score));
        assert_true(score->valuedouble >= 0 && score->valuedouble <= 1);
        scores[n] = score->valuedouble;
        const char *route = cJSON_GetStringValue(cJSON_GetObjectItem(o, "route"));
        assert_non_null(route);
        assert_true(strcmp(route, "local") == 0 || strcmp(route, "remote") == 0);
        assert_true(cJSON_IsArray(cJSON_GetObjectItem(o, "reasons")));
        if (n == 0) {
            assert_string_equal(route, "local");
        } else {
            assert_string_equal(route, "remote");
        }
        cJSON_Delete(o);
        n++;
    }
    assert_int_equal(n, 3);
    assert_true(scores[1] > scores[0] && scores[2] > scores[0]);

    /* A line over the 1 MiB cap is reported by number and skipped; the next one is scored. */
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fputs("{\"id\":\"big\",\"prompt\":\"", f);
    for (int i = 0; i < 1100 * 1024 / 8; i++) {
        fputs("abcdefgh", f);
    }
    fputs("\"}\n{\"id\":\"after\",\"prompt\":\"ok\"}\n", f);
    fclose(f);
    run("route score", in, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "stdin:1: line longer than 1 MiB, skipped"));
    assert_non_null(strstr(r.out, "\"id\":\"after\""));
    assert_null(strstr(r.out, "\"id\":\"big\""));

    /* --threshold 0 sends everything remote; a clean input exits 0. */
    write_file(in, "{\"id\":\"a\",\"prompt\":\"hi\"}\n");
    run("route score --threshold 0", in, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"route\":\"remote\""));
}

/* -c CONF: the config's router.threshold (and router.weights) drive the decision, as in the
 * gateway; --threshold on the command line overrides; a bad config is refused by name. */
static void test_score_config(void **state)
{
    (void)state;
    char in[128], conf[128], bad[128], args[512];
    snprintf(in, sizeof(in), "%s/cfg-prompts.jsonl", tmpdir);
    snprintf(conf, sizeof(conf), "%s/high.lua", tmpdir);
    snprintf(bad, sizeof(bad), "%s/bad.lua", tmpdir);
    write_file(in, "{\"id\":\"a\",\"prompt\":\"hi, how are you?\"}\n"
                   "{\"id\":\"c\",\"prompt\":\"Write a Python function that merges two "
                   "sorted lists.\"}\n");
    write_file(conf, "router = { threshold = 0.99 }\n");
    struct run r;
    /* without -c the code prompt (score about 0.84) goes remote (the weights' threshold) */
    run("route score", in, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"route\":\"remote\""));
    snprintf(args, sizeof(args), "route score -c %s", conf);
    run(args, in, &r);
    if (r.status != 0) {
        fail_msg("status %d: %s", r.status, r.err);
    }
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        const char *route = cJSON_GetStringValue(cJSON_GetObjectItem(o, "route"));
        assert_non_null(route);
        assert_string_equal(route, "local");
        cJSON_Delete(o);
        n++;
    }
    assert_int_equal(n, 2);
    /* the command line wins over the config */
    snprintf(args, sizeof(args), "route score --config %s --threshold 0", conf);
    run(args, in, &r);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, "\"route\":\"local\""));
    /* router.weights from the config is used: a missing file is refused */
    write_file(bad, "router = { weights = '/nonexistent/w.json' }\n");
    snprintf(args, sizeof(args), "route score -c %s", bad);
    run(args, in, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "router.weights"));
    snprintf(args, sizeof(args), "route score -c %s/nope.lua", tmpdir);
    run(args, in, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "nope.lua"));
}

/* Writes conf/router-weights.json with its threshold replaced by th into path. */
static void write_weights(const char *path, double th)
{
    static char text[1 << 16];
    read_file(WYE_SOURCE_DIR "/conf/router-weights.json", text, sizeof(text));
    cJSON *w = cJSON_Parse(text);
    assert_non_null(w);
    assert_non_null(cJSON_GetObjectItem(w, "threshold"));
    cJSON_ReplaceItemInObject(w, "threshold", cJSON_CreateNumber(th));
    char *out = cJSON_Print(w);
    assert_non_null(out);
    write_file(path, out);
    free(out);
    cJSON_Delete(w);
}

/* An unset router.threshold means the weights' own, in score, eval and the gateway alike;
 * eval -c CONF decides at the config's threshold and says where it came from. */
static void test_threshold_sources(void **state)
{
    (void)state;
    char in[128], w90[128], conf_w[128], conf_th[128], data[128], args[768];
    snprintf(in, sizeof(in), "%s/th-prompts.jsonl", tmpdir);
    snprintf(w90, sizeof(w90), "%s/w90.json", tmpdir);
    snprintf(conf_w, sizeof(conf_w), "%s/weights-only.lua", tmpdir);
    snprintf(conf_th, sizeof(conf_th), "%s/threshold.lua", tmpdir);
    snprintf(data, sizeof(data), "%s/th-data.jsonl", tmpdir);
    /* the code prompt scores about 0.84 with the built-in weights */
    write_file(in, "{\"id\":\"c\",\"prompt\":\"Write a Python function that merges two "
                   "sorted lists.\"}\n");
    write_weights(w90, 0.9);
    char text[512];
    snprintf(text, sizeof(text), "router = { weights = '%s' }\n", w90);
    write_file(conf_w, text);
    snprintf(text, sizeof(text), "router = { weights = '%s', threshold = 0.5 }\n", w90);
    write_file(conf_th, text);
    struct run r;
    /* weights with threshold 0.9 and no router.threshold: local (a 0.5 default would say
     * remote) */
    snprintf(args, sizeof(args), "route score -c %s", conf_w);
    run(args, in, &r);
    if (r.status != 0) {
        fail_msg("status %d: %s", r.status, r.err);
    }
    assert_non_null(strstr(r.out, "\"route\":\"local\""));
    /* router.threshold set: it wins over the weights' own */
    snprintf(args, sizeof(args), "route score -c %s", conf_th);
    run(args, in, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"route\":\"remote\""));

    /* eval: the same three sources of the threshold */
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 10; i++) {
        fprintf(f, "{\"prompt\":\"hello there, how is your day %d?\",\"label\":\"local\"}\n", i);
        fprintf(f,
                "{\"prompt\":\"Write a Python function that merges %d sorted lists.\","
                "\"label\":\"remote\"}\n",
                i + 2);
    }
    fclose(f);
    snprintf(args, sizeof(args), "route eval %s --json -c %s", data, conf_w);
    run(args, NULL, &r);
    if (r.status != 0) {
        fail_msg("status %d: %s", r.status, r.err);
    }
    cJSON *o = cJSON_Parse(r.out);
    assert_non_null(o);
    assert_true(fabs(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "threshold")) - 0.9) < 1e-4);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(o, "threshold_source")),
                        "weights");
    double acc_w90 = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "accuracy"));
    cJSON_Delete(o);
    snprintf(args, sizeof(args), "route eval %s --json -c %s", data, conf_th);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    o = cJSON_Parse(r.out);
    assert_non_null(o);
    assert_true(fabs(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "threshold")) - 0.5) < 1e-4);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(o, "threshold_source")), "config");
    double acc_05 = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "accuracy"));
    cJSON_Delete(o);
    /* the code prompts go local at 0.9 and remote at 0.5 */
    assert_true(acc_05 > acc_w90 + 0.25);
    snprintf(args, sizeof(args), "route eval %s -c %s --threshold 0.25", data, conf_th);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "at threshold 0.2500 (from the command line)"));
    /* without -c: the embedded weights' own threshold, as the gateway's default */
    snprintf(args, sizeof(args), "route eval %s", data);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "(from the weights)"));
    /* cross-validation trains its own thresholds: -c does not apply */
    snprintf(args, sizeof(args), "route eval %s --cv 2 -c %s", data, conf_th);
    run(args, NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--cv trains its own weights"));
    /* a config that does not load is named */
    snprintf(args, sizeof(args), "route eval %s -c %s/nope.lua", data, tmpdir);
    run(args, NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "nope.lua"));
}

static void test_train_eval(void **state)
{
    (void)state;
    char data[128], weights[128], args[512];
    snprintf(data, sizeof(data), "%s/data.jsonl", tmpdir);
    snprintf(weights, sizeof(weights), "%s/w.json", tmpdir);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 20; i++) {
        fprintf(f,
                "{\"prompt\":\"hello there, how is your day %d?\",\"label\":\"local\","
                "\"source\":\"chat\"}\n",
                i);
        fprintf(f,
                "{\"prompt\":\"Compute the sum of all integers $n$ such that $n^2 < %d$ "
                "and prove it.\",\"label\":\"remote\",\"source\":\"math\"}\n",
                i + 50);
    }
    fclose(f);
    struct run r;
    snprintf(args, sizeof(args), "route train %s -o %s --l2 1 --epochs 20", data, weights);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    snprintf(args, sizeof(args), "route eval %s --weights %s --json", data, weights);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    cJSON *o = cJSON_Parse(r.out);
    assert_non_null(o);
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "auc")) > 0.99);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "sources")), 2);
    cJSON_Delete(o);
    snprintf(args, sizeof(args), "route eval %s --cv 4", data);
    run(args, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "cross-validation (4 folds)"));
    assert_non_null(strstr(r.out, "auc"));
    /* Leave-one-source-out with one class per source fails clearly: each fold has one class. */
    snprintf(args, sizeof(args), "route eval %s --cv source", data);
    run(args, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "single class"));

    /* Malformed data is fatal and names the line. */
    f = fopen(data, "a");
    fputs("{\"prompt\":\"x\",\"label\":\"medium\"}\n", f);
    fclose(f);
    snprintf(args, sizeof(args), "route train %s -o %s", data, weights);
    run(args, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "data.jsonl:41: 'label' must be"));
    /* A bad weights file is named. */
    write_file(weights, "{\"bias\":0}");
    snprintf(args, sizeof(args), "route score --weights %s", weights);
    run(args, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "w.json: router weights: missing number: 'threshold'"));
}

static void test_help_and_usage(void **state)
{
    (void)state;
    struct run r;
    run("route --help", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "wye route train"));
    run("route train --help", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "--cv K|source"));
    run("route frobnicate", NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown subcommand 'frobnicate'"));
    run("route train", NULL, &r);
    assert_int_equal(r.status, 2);
    run("route eval x --l2 banana", NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--l2 must be a number"));
    run("route train x -o y --drop nosuchfeature", NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown feature 'nosuchfeature'"));
    run("route features --json", NULL, &r);
    assert_int_equal(r.status, 0);
    cJSON *a = cJSON_Parse(r.out);
    assert_true(cJSON_IsArray(a) && cJSON_GetArraySize(a) > 20);
    cJSON_Delete(a);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/wye-score-cli-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_lines),       cmocka_unit_test(test_score_config),
        cmocka_unit_test(test_threshold_sources), cmocka_unit_test(test_train_eval),
        cmocka_unit_test(test_help_and_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
