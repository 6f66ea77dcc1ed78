/* `wye ledger verify FILE...` and `wye ledger summary [FILE...] [--since S] [--by G] [--json]`:
 * command-line front ends of rt_ledger_verify and rt_ledger_summary. Main thread only. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "router/ledger_internal.h"

#define CLI_REPORT_MAX ((size_t)1 << 20)
#define CLI_JSON_MAX ((size_t)64 << 20)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: wye ledger verify FILE...\n"
            "       wye ledger summary [FILE...] [--since 24h|7d|2026-11-01] "
            "[--by route|model|key|day|agent] [--json]\n\n"
            "verify: recomputes every record's HMAC and the chain over FILEs given oldest "
            "first\n  (rotated files \"LEDGER.<seq>\" before LEDGER). The key is WYE_LEDGER_KEY "
            "or the\n  file LEDGER.key next to the ledger. Exit 0 when intact, 1 otherwise.\n"
            "summary: requests, errors, tokens, cost, saving and p50/p95 latency and time to "
            "first\n  token per group. Without FILEs: $WYE_LEDGER or ./%s and its rotated "
            "files.\n",
            RT_LEDGER_DEFAULT_PATH);
}

/* The ledger path a file belongs to: "x.jsonl.000000000012" -> "x.jsonl". */
static char *ledger_path_of(const char *file)
{
    size_t n = strlen(file);
    const size_t sfx = 1 + LEDGER_ROTATED_DIGITS;
    if (n > sfx && file[n - sfx] == '.' &&
        strspn(file + n - sfx + 1, "0123456789") == LEDGER_ROTATED_DIGITS) {
        return wye_strndup(file, n - sfx);
    }
    return wye_strdup(file);
}

static int cmd_verify(int argc, char **argv)
{
    int first = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "wye ledger verify: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (argc - first < 1) {
        fprintf(stderr, "wye ledger verify: give the ledger files, oldest first\n");
        return 2;
    }
    char *path = ledger_path_of(argv[argc - 1]);
    if (!path) {
        fprintf(stderr, "wye ledger verify: out of memory\n");
        return 1;
    }
    uint8_t key[RT_LEDGER_KEY_MAX];
    size_t key_len = 0;
    char err[512];
    enum wye_err e = rt_ledger_key_from_env(path, false, key, &key_len, err, sizeof(err));
    wye_free(path);
    if (e) {
        fprintf(stderr, "wye ledger verify: %s\n", err);
        return 1;
    }
    struct wye_buf report;
    wye_buf_init(&report, CLI_REPORT_MAX);
    uint64_t n = 0;
    char last[65];
    e = rt_ledger_verify((const char *const *)argv + first, (size_t)(argc - first), key, key_len,
                         &report, &n, last);
    memset(key, 0, sizeof(key));
    if (report.len) {
        fputs(report.data, stderr);
    }
    wye_buf_cleanup(&report);
    if (e == WYE_OK) {
        printf("ok: %llu records, chain intact\n", (unsigned long long)n);
        if (last[0]) {
            printf("last MAC: %s (keep a copy elsewhere to detect truncation of the newest "
                   "records)\n",
                   last);
        }
        return 0;
    }
    if (e == WYE_ERR_PARSE) {
        fprintf(stderr, "FAILED: %llu records checked, the ledger is not intact\n",
                (unsigned long long)n);
    } else {
        fprintf(stderr, "wye ledger verify: %s\n", wye_err_str(e));
    }
    return 1;
}

static void fmt_num(const cJSON *obj, const char *key, const char *sub, char *out, size_t n)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (sub) {
        it = cJSON_GetObjectItemCaseSensitive(it, sub);
    }
    if (!cJSON_IsNumber(it)) {
        snprintf(out, n, "-");
    } else if (strstr(key, "usd")) {
        /* micro-dollars: one short local answer's counterfactual is about $0.00001 */
        snprintf(out, n, "%.6f", it->valuedouble);
    } else if (sub) {
        snprintf(out, n, "%.1f", it->valuedouble);
    } else {
        snprintf(out, n, "%.0f", it->valuedouble);
    }
}

static void print_row(const char *name, const cJSON *g)
{
    static const char *const cols[][2] = {
        {"requests", NULL},          {"errors", NULL},      {"prompt_tokens", NULL},
        {"completion_tokens", NULL}, {"cost_usd", NULL},    {"saving_usd", NULL},
        {"latency_ms", "p50"},       {"latency_ms", "p95"}, {"ttft_ms", "p50"},
        {"ttft_ms", "p95"},
    };
    printf("%-24.64s", name);
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
        char v[48];
        fmt_num(g, cols[i][0], cols[i][1], v, sizeof(v));
        printf(" %11s", v);
    }
    printf("\n");
}

static int print_table(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    if (!j) {
        fprintf(stderr, "wye ledger summary: out of memory\n");
        return 1;
    }
    printf("%-24s %11s %11s %11s %11s %11s %11s %11s %11s %11s %11s\n", "GROUP", "REQUESTS",
           "ERRORS", "PROMPT_TOK", "COMPL_TOK", "COST_USD", "SAVING_USD", "LAT_P50_MS",
           "LAT_P95_MS", "TTFT_P50", "TTFT_P95");
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(j, "groups"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(g, "group");
        print_row(cJSON_IsString(name) ? name->valuestring : "?", g);
    }
    print_row("TOTAL", cJSON_GetObjectItemCaseSensitive(j, "total"));
    cJSON_Delete(j);
    return 0;
}

static int cmd_summary(int argc, char **argv)
{
    int64_t since = INT64_MIN;
    enum rt_ledger_by by = RT_LEDGER_BY_NONE;
    bool json = false;
    const char **files = wye_calloc((size_t)argc + 1, sizeof(char *));
    if (!files) {
        fprintf(stderr, "wye ledger summary: out of memory\n");
        return 1;
    }
    size_t n = 0, n_found = 0;
    char **found = NULL;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = 0;
            goto out_files;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--since") == 0 || strcmp(a, "--by") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "wye ledger summary: %s needs a value\n", a);
                goto out_files;
            }
            const char *v = argv[++i];
            if (a[2] == 's' && !rt_ledger_since_parse(v, wye_wall_ms(), &since)) {
                fprintf(stderr,
                        "wye ledger summary: bad --since '%s' (use 30m, 24h, 7d or 2026-11-01)\n",
                        v);
                goto out_files;
            }
            if (a[2] == 'b' && !rt_ledger_by_parse(v, &by)) {
                fprintf(stderr,
                        "wye ledger summary: bad --by '%s' (use route, model, key, day or agent)\n",
                        v);
                goto out_files;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "wye ledger summary: unknown option '%s'\n", a);
            goto out_files;
        } else {
            files[n++] = a;
        }
    }
    rc = 1;
    if (n == 0) {
        const char *path = getenv("WYE_LEDGER"); /* NOLINT(concurrency-mt-unsafe) */
        path = path && *path ? path : RT_LEDGER_DEFAULT_PATH;
        if (rt_ledger_files(path, &found, &n_found) != WYE_OK) {
            fprintf(stderr, "wye ledger summary: out of memory\n");
            goto out_files;
        }
        if (n_found == 0) {
            fprintf(stderr, "wye ledger summary: no ledger at %s (set WYE_LEDGER or name files)\n",
                    path);
            goto out_found;
        }
    }
    struct wye_buf out, problems;
    wye_buf_init(&out, CLI_JSON_MAX);
    wye_buf_init(&problems, CLI_REPORT_MAX);
    enum wye_err e =
        n ? rt_ledger_summary(files, n, since, by, &out, &problems)
          : rt_ledger_summary((const char *const *)found, n_found, since, by, &out, &problems);
    if (problems.len) {
        fputs(problems.data, stderr);
    }
    if (e) {
        fprintf(stderr, "wye ledger summary: %s\n", wye_err_str(e));
    } else if (json) {
        printf("%s\n", out.data);
        rc = 0;
    } else {
        rc = print_table(out.data);
    }
    wye_buf_cleanup(&out);
    wye_buf_cleanup(&problems);
out_found:
    rt_ledger_files_free(found, n_found);
out_files:
    wye_free(files);
    return rc;
}

int rt_cli_ledger(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "verify") == 0) {
        return cmd_verify(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "summary") == 0) {
        return cmd_summary(argc - 1, argv + 1);
    }
    fprintf(stderr, "wye ledger: unknown subcommand '%s' (verify or summary)\n", argv[1]);
    return 2;
}
