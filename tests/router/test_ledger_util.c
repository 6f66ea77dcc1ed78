/* Helpers for the ledger tests (see test_ledger_util.h). Main thread only. */
#include "tests/router/test_ledger_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const uint8_t *tl_key(size_t *len)
{
    *len = strlen(TL_KEY_TEXT);
    return (const uint8_t *)TL_KEY_TEXT;
}

static void die(const char *what)
{
    fprintf(stderr, "test helper: %s\n", what);
    abort();
}

void tl_tmpdir(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "%s/ledger_%s_XXXXXX", WYE_BINARY_DIR, tag);
    if (!mkdtemp(out)) {
        die("mkdtemp");
    }
}

void tl_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

struct rt_ledger_rec tl_rec(int i)
{
    static char ids[64][32];
    char *id = ids[i & 63];
    snprintf(id, 32, "req_%06d", i);
    struct rt_ledger_rec r = {
        .ts_ms = TL_TS0 + (int64_t)i * 1000,
        .request_id = id,
        .key_name = i % 2 ? "team-a" : "team-b",
        .route = i % 3 ? "remote" : "local",
        .model = i % 3 ? "gpt-big" : "qwen-small",
        .status = i % 5 == 4 ? "error" : "ok",
        .error = i % 5 == 4 ? "upstream said \"no\"\n" : NULL,
        .reasons_json = "[\"long prompt\", \"code\"]",
        .run_id = NULL,
        .agent = NULL,
        .score = 0.25 + 0.01 * i,
        .prompt_tokens = 100 + i,
        .completion_tokens = 20 + i,
        .usage_estimated = i % 4 == 3,
        .ttft_ms = 50.0 + i,
        .latency_ms = 400.0 + 10 * i,
        .cost_usd = i % 3 ? 0.0012 * i : 0,
        .counterfactual_cost_usd = 0.0012 * i,
        .saving_usd = i % 3 ? 0 : 0.0012 * i,
    };
    return r;
}

struct rt_ledger *tl_open(const char *path, const struct rt_ledger_opts *opts)
{
    struct rt_ledger_opts o = {0};
    if (opts) {
        o = *opts;
    }
    o.path = path;
    if (!o.key) {
        o.key = tl_key(&o.key_len);
    }
    struct rt_ledger *l = NULL;
    char err[512];
    if (rt_ledger_open(&o, &l, err, sizeof(err)) != WYE_OK) {
        fprintf(stderr, "tl_open: %s\n", err);
        return NULL;
    }
    return l;
}

void tl_write_records(const char *path, int first, int n, const struct rt_ledger_opts *opts)
{
    struct rt_ledger *l = tl_open(path, opts);
    if (!l) {
        die("open");
    }
    for (int i = first; i < first + n; i++) {
        struct rt_ledger_rec r = tl_rec(i);
        if (rt_ledger_append(l, &r, NULL, NULL) != WYE_OK) {
            die("append");
        }
    }
    rt_ledger_close(l);
}

char *tl_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    size_t r;
    while (p && (r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            cap *= 2;
            p = realloc(p, cap);
        }
    }
    fclose(f);
    if (!p) {
        die("oom");
    }
    p[n] = '\0';
    if (len) {
        *len = n;
    }
    return p;
}

void tl_write(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        die("write");
    }
}

size_t tl_lines(const char *text, char ***lines)
{
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(char *));
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(char *));
        }
        v[n] = malloc(l + 1);
        memcpy(v[n], p, l);
        v[n][l] = '\0';
        n++;
        p += l + (nl ? 1 : 0);
    }
    *lines = v;
    return n;
}

void tl_lines_free(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(lines[i]);
    }
    free(lines);
}

void tl_write_lines(const char *path, char **lines, const int *order, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        die("open");
    }
    for (size_t i = 0; i < n; i++) {
        fputs(lines[order[i]], f);
        fputc('\n', f);
    }
    fclose(f);
}

enum wye_err tl_verify(const char *const *files, size_t n, const uint8_t *key, size_t key_len,
                       struct wye_buf *report, uint64_t *n_records)
{
    if (!key) {
        key = tl_key(&key_len);
    }
    char last[65];
    uint64_t nr;
    wye_buf_init(report, 1 << 20);
    enum wye_err err = rt_ledger_verify(files, n, key, key_len, report, &nr, last);
    if (n_records) {
        *n_records = nr;
    }
    if (!report->data) {
        wye_buf_append_str(report, "");
    }
    return err;
}

int tl_count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++) {
        n += *s == '\n';
    }
    return n;
}
