/* The ledger's writer and verifier: records chain and verify; each kind of tampering (edited
 * field, edited MAC, deleted middle/first record, inserted forgery, swapped records, wrong
 * key) is detected and the bad record named; a torn last line is cut on open and the chain
 * continues; size and daily rotation continue the chain across files (and verify fails when a
 * file is left out); done callbacks run on the writer thread in order; the key never reaches
 * the file or an error message; allocation failure in open, append and verify. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/crypto.h"
#include "common/log.h"
#include "router/ledger.h"
#include "tests/router/test_ledger_util.h"

static char dir[512];
static char path[600];

static int setup(void **state)
{
    (void)state;
    tl_tmpdir(dir, sizeof(dir), "t");
    snprintf(path, sizeof(path), "%s/ledger.jsonl", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_rmdir(dir);
    return 0;
}

/* Collects log lines written while fn runs. */
static int log_fd_begin(char *name, size_t n)
{
    snprintf(name, n, "%s/log.txt", dir);
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    wye_log_set_fd(fd);
    return fd;
}

static char *log_fd_end(int fd, const char *name)
{
    wye_log_set_fd(2);
    close(fd);
    char *s = tl_read(name, NULL);
    unlink(name);
    return s;
}

static void assert_verifies(const char *const *files, size_t n, uint64_t want_records)
{
    struct wye_buf rep;
    uint64_t nr = 0;
    enum wye_err err = tl_verify(files, n, NULL, 0, &rep, &nr);
    if (err != WYE_OK) {
        fprintf(stderr, "unexpected problems:\n%s", rep.data);
    }
    assert_int_equal(err, WYE_OK);
    assert_int_equal(nr, want_records);
    wye_buf_cleanup(&rep);
}

static void test_chain_append_verify(void **state)
{
    (void)state;
    tl_write_records(path, 0, 5, NULL);
    const char *files[] = {path};
    assert_verifies(files, 1, 5);

    char *text = tl_read(path, NULL);
    char **lines;
    size_t n = tl_lines(text, &lines);
    assert_int_equal(n, 5);
    /* Stable field order, first record chained to zeros, the optional fields as documented. */
    assert_true(strncmp(lines[0],
                        "{\"seq\":1,\"ts\":\"2026-11-21T10:00:00.000Z\",\"request_id\":"
                        "\"req_000000\",\"key\":\"team-b\",\"route\":\"local\","
                        "\"score\":0.2500,\"reasons\":[\"long prompt\",\"code\"],"
                        "\"model\":\"qwen-small\",\"prompt_tokens\":100,",
                        187) == 0);
    assert_non_null(strstr(lines[0], "\"usage\":\"reported\",\"ttft_ms\":50.000,"));
    assert_non_null(strstr(lines[0], "\"status\":\"ok\",\"error\":null,\"run_id\":null,"
                                     "\"agent\":null,\"prev\":\"000000000000000000000000000000"
                                     "0000000000000000000000000000000000\",\"mac\":\""));
    assert_non_null(strstr(lines[3], "\"usage\":\"estimated\""));
    assert_non_null(
        strstr(lines[4], "\"status\":\"error\",\"error\":\"upstream said \\\"no\\\"\\n\""));
    /* prev of each record is the MAC of the one before. */
    for (size_t i = 1; i < n; i++) {
        const char *mac = strstr(lines[i - 1], "\"mac\":\"") + 7;
        const char *prev = strstr(lines[i], "\"prev\":\"") + 8;
        assert_memory_equal(mac, prev, 64);
    }
    tl_lines_free(lines, n);
    free(text);

    /* Reopening continues the chain. */
    tl_write_records(path, 5, 3, NULL);
    assert_verifies(files, 1, 8);
    text = tl_read(path, NULL);
    assert_non_null(strstr(text, "\n{\"seq\":6,"));
    assert_non_null(strstr(text, "\n{\"seq\":8,"));
    free(text);
}

struct done_log {
    pthread_mutex_t mu;
    int n;
    int order[300];
    enum wye_err status[300];
    int off_caller_thread;
    pthread_t caller;
};

struct done_arg {
    struct done_log *log;
    int i;
};

static void on_done(void *arg, enum wye_err status)
{
    struct done_arg *a = arg;
    pthread_mutex_lock(&a->log->mu);
    if (a->log->n < 300) {
        a->log->order[a->log->n] = a->i;
        a->log->status[a->log->n] = status;
    }
    a->log->n++;
    if (!pthread_equal(pthread_self(), a->log->caller)) {
        a->log->off_caller_thread++;
    }
    pthread_mutex_unlock(&a->log->mu);
}

static void test_done_cb_order_thread(void **state)
{
    (void)state;
    static struct done_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    static struct done_arg args[300];
    log.caller = pthread_self();
    struct rt_ledger_opts o = {.fsync = RT_LEDGER_FSYNC_EVERY, .queue_cap = 1000};
    struct rt_ledger *l = tl_open(path, &o);
    assert_non_null(l);
    for (int i = 0; i < 300; i++) {
        args[i] = (struct done_arg){&log, i};
        struct rt_ledger_rec r = tl_rec(i);
        assert_int_equal(rt_ledger_append(l, &r, on_done, &args[i]), WYE_OK);
    }
    rt_ledger_close(l);
    assert_int_equal(log.n, 300);
    assert_int_equal(log.off_caller_thread, 300);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(log.order[i], i);
        assert_int_equal(log.status[i], WYE_OK);
    }
    const char *files[] = {path};
    assert_verifies(files, 1, 300);
}

static int wait_done(struct done_log *log, int n)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&log->mu);
        int have = log->n;
        pthread_mutex_unlock(&log->mu);
        if (have >= n) {
            return have;
        }
        usleep(10000);
    }
    return -1;
}

static void test_interval_policy_stats(void **state)
{
    (void)state;
    static struct done_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    static struct done_arg args[5];
    log.caller = pthread_self();
    tl_write_records(path, 0, 2, NULL);
    struct rt_ledger_opts o = {.fsync = RT_LEDGER_FSYNC_INTERVAL, .fsync_interval_ms = 20};
    struct rt_ledger *l = tl_open(path, &o);
    assert_non_null(l);
    for (int i = 0; i < 5; i++) {
        args[i] = (struct done_arg){&log, i};
        struct rt_ledger_rec r = tl_rec(2 + i);
        assert_int_equal(rt_ledger_append(l, &r, on_done, &args[i]), WYE_OK);
    }
    assert_int_equal(wait_done(&log, 5), 5);
    struct rt_ledger_stats st;
    rt_ledger_stats(l, &st);
    assert_int_equal(st.records, 5);
    assert_int_equal(st.write_errors, 0);
    assert_int_equal(st.last_seq, 7);
    usleep(50000); /* past the interval: the writer syncs on its own */
    rt_ledger_close(l);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log.status[i], WYE_OK);
    }
    const char *files[] = {path};
    assert_verifies(files, 1, 7);
}

static void test_write_failure(void **state)
{
    (void)state;
    /* /dev/full: every write fails with ENOSPC. Each record's done reports IO, in order. */
    if (access("/dev/full", W_OK) != 0) {
        skip();
    }
    static struct done_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    static struct done_arg args[3];
    log.caller = pthread_self();
    char logname[700];
    int fd = log_fd_begin(logname, sizeof(logname));
    struct rt_ledger *l = tl_open("/dev/full", NULL);
    assert_non_null(l);
    for (int i = 0; i < 3; i++) {
        args[i] = (struct done_arg){&log, i};
        struct rt_ledger_rec r = tl_rec(i);
        assert_int_equal(rt_ledger_append(l, &r, on_done, &args[i]), WYE_OK);
    }
    int got = wait_done(&log, 3);
    struct rt_ledger_stats st;
    rt_ledger_stats(l, &st);
    rt_ledger_close(l);
    char *text = log_fd_end(fd, logname);
    assert_int_equal(got, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(log.order[i], i);
        assert_int_equal(log.status[i], WYE_ERR_IO);
    }
    assert_int_equal(st.records, 0);
    assert_int_equal(st.write_errors, 3);
    assert_int_equal(st.last_seq, 0); /* the chain's head was rewound */
    assert_non_null(strstr(text, "ledger: write to /dev/full failed"));
    free(text);
}

static void test_queue_full_again(void **state)
{
    (void)state;
    /* A queue of 1 and a burst: some appends answer AGAIN, and every accepted one is written. */
    struct rt_ledger_opts o = {.queue_cap = 1};
    struct rt_ledger *l = tl_open(path, &o);
    assert_non_null(l);
    int ok = 0, again = 0;
    for (int i = 0; i < 2000 && again == 0; i++) {
        struct rt_ledger_rec r = tl_rec(i);
        enum wye_err err = rt_ledger_append(l, &r, NULL, NULL);
        assert_true(err == WYE_OK || err == WYE_ERR_AGAIN);
        ok += err == WYE_OK;
        again += err == WYE_ERR_AGAIN;
    }
    rt_ledger_close(l);
    assert_true(again > 0);
    const char *files[] = {path};
    assert_verifies(files, 1, (uint64_t)ok);
}

/* Writes 6 records, applies the order (indices into the lines; -1 is the edited line "extra"),
 * verifies and returns the report. */
static char *tamper(const int *order, size_t n, const char *extra, enum wye_err *err)
{
    tl_write_records(path, 0, 6, NULL);
    char *text = tl_read(path, NULL);
    char **lines;
    size_t nl = tl_lines(text, &lines);
    assert_int_equal(nl, 6);
    lines = realloc(lines, 7 * sizeof(char *));
    lines[6] = strdup(extra ? extra : "");
    int ord[16];
    for (size_t i = 0; i < n; i++) {
        ord[i] = order[i] < 0 ? 6 : order[i];
    }
    tl_write_lines(path, lines, ord, n);
    tl_lines_free(lines, 7);
    free(text);
    const char *files[] = {path};
    struct wye_buf rep;
    *err = tl_verify(files, 1, NULL, 0, &rep, NULL);
    char *out = strdup(rep.data);
    wye_buf_cleanup(&rep);
    unlink(path);
    return out;
}

/* Line i of a freshly written 6-record ledger, with from replaced by to. */
static char *edited_line(int i, const char *from, const char *to)
{
    tl_write_records(path, 0, 6, NULL);
    char *text = tl_read(path, NULL);
    char **lines;
    size_t nl = tl_lines(text, &lines);
    char *p = strstr(lines[i], from);
    assert_non_null(p);
    size_t need = strlen(lines[i]) + strlen(to) + 1;
    char *out = malloc(need);
    snprintf(out, need, "%.*s%s%s", (int)(p - lines[i]), lines[i], to, p + strlen(from));
    tl_lines_free(lines, nl);
    free(text);
    unlink(path);
    return out;
}

static void expect_count(const char *report, int n)
{
    if (tl_count_lines(report) != n) {
        fprintf(stderr, "want %d problem lines, got:\n%s", n, report);
    }
    assert_int_equal(tl_count_lines(report), n);
}

static void expect_one(const char *report, const char *want)
{
    char full[800];
    snprintf(full, sizeof(full), "%s:%s", path, want);
    if (!strstr(report, full)) {
        fprintf(stderr, "want: %s\ngot:\n%s", full, report);
    }
    assert_non_null(strstr(report, full));
}

static void test_tamper_edit_field(void **state)
{
    (void)state;
    enum wye_err err;
    char *line = edited_line(2, "\"prompt_tokens\":102", "\"prompt_tokens\":2");
    int order[] = {0, 1, -1, 3, 4, 5};
    char *rep = tamper(order, 6, line, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "3: record seq 3: MAC mismatch (record edited or forged)");
    expect_count(rep, 1);
    free(rep);
    free(line);
}

static void test_tamper_edit_mac(void **state)
{
    (void)state;
    enum wye_err err;
    /* Records are deterministic (fixed times, fixed key): read line 4 once, change the first
     * digit of its MAC, and put it back in place. */
    tl_write_records(path, 0, 6, NULL);
    char *text = tl_read(path, NULL);
    unlink(path);
    char **lines;
    size_t nl = tl_lines(text, &lines);
    char *line = strdup(lines[3]);
    char *mac = strstr(line, "\"mac\":\"") + 7;
    mac[0] = mac[0] == 'a' ? 'b' : 'a';
    int order[] = {0, 1, 2, -1, 4, 5};
    char *rep = tamper(order, 6, line, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "4: record seq 4: MAC mismatch (record edited or forged)");
    expect_count(rep, 1);
    free(rep);
    free(line);
    tl_lines_free(lines, nl);
    free(text);
}

static void test_tamper_delete_middle(void **state)
{
    (void)state;
    enum wye_err err;
    int order[] = {0, 1, 3, 4, 5};
    char *rep = tamper(order, 5, NULL, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "3: record seq 4: chain broken: prev does not match record seq 2's MAC (a "
                    "record was deleted or reordered)");
    expect_count(rep, 1);
    free(rep);
}

static void test_tamper_delete_first(void **state)
{
    (void)state;
    enum wye_err err;
    int order[] = {1, 2, 3, 4, 5};
    char *rep = tamper(order, 5, NULL, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "1: record seq 2: chain broken: prev is not the chain's start");
    expect_count(rep, 1);
    free(rep);
}

static void test_tamper_insert_forged(void **state)
{
    (void)state;
    enum wye_err err;
    /* A copy of record 3 with another request id, inserted after it. */
    char *line = edited_line(2, "req_000002", "req_999999");
    int order[] = {0, 1, 2, -1, 3, 4, 5};
    char *rep = tamper(order, 7, line, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "4: record seq 3: MAC mismatch (record edited or forged)");
    expect_count(rep, 1);
    free(rep);
    free(line);
}

static void test_tamper_swap(void **state)
{
    (void)state;
    enum wye_err err;
    int order[] = {0, 1, 3, 2, 4, 5};
    char *rep = tamper(order, 6, NULL, &err);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep, "3: record seq 4: chain broken: prev does not match record seq 2's MAC");
    expect_one(rep, "4: record seq 3: chain broken: prev does not match record seq 4's MAC");
    assert_null(strstr(rep, "MAC mismatch"));
    free(rep);
}

static void test_wrong_key(void **state)
{
    (void)state;
    tl_write_records(path, 0, 3, NULL);
    const char *files[] = {path};
    const char other[] = "another-key-of-at-least-32-bytes!!";
    struct wye_buf rep;
    enum wye_err err = tl_verify(files, 1, (const uint8_t *)other, strlen(other), &rep, NULL);
    assert_int_equal(err, WYE_ERR_PARSE);
    expect_one(rep.data, "1: record seq 1: MAC mismatch");
    expect_one(rep.data, "3: record seq 3: MAC mismatch");
    assert_non_null(strstr(rep.data, "is this the right ledger key?"));
    wye_buf_cleanup(&rep);

    /* Opening with the wrong key refuses (never cuts valid records) and names no key. */
    struct rt_ledger_opts o = {
        .path = path, .key = (const uint8_t *)other, .key_len = strlen(other)};
    struct rt_ledger *l = NULL;
    char msg[512];
    size_t before = 0, after = 0;
    free(tl_read(path, &before));
    assert_int_equal(rt_ledger_open(&o, &l, msg, sizeof(msg)), WYE_ERR_AUTH);
    assert_null(l);
    assert_non_null(strstr(msg, "does not verify with this key"));
    assert_null(strstr(msg, other));
    assert_null(strstr(msg, TL_KEY_TEXT));
    free(tl_read(path, &after));
    assert_int_equal(before, after);
}

static void test_torn_last_line(void **state)
{
    (void)state;
    tl_write_records(path, 0, 3, NULL);
    size_t good_len;
    char *good = tl_read(path, &good_len);
    /* Half a line, as a crash in the middle of a write would leave. */
    FILE *f = fopen(path, "ab");
    fputs("{\"seq\":4,\"ts\":\"2026-11-21T10:0", f);
    fclose(f);
    char logname[700];
    int fd = log_fd_begin(logname, sizeof(logname));
    struct rt_ledger *l = tl_open(path, NULL);
    char *log = log_fd_end(fd, logname);
    assert_non_null(l);
    assert_non_null(strstr(log, "removed a torn last record (30 bytes)"));
    free(log);
    char torn[700];
    snprintf(torn, sizeof(torn), "%s.torn", path);
    char *kept = tl_read(torn, NULL);
    assert_non_null(kept);
    assert_string_equal(kept, "{\"seq\":4,\"ts\":\"2026-11-21T10:0\n");
    free(kept);
    size_t len;
    char *now = tl_read(path, &len);
    assert_int_equal(len, good_len);
    assert_memory_equal(now, good, len);
    free(now);
    for (int i = 3; i < 5; i++) {
        struct rt_ledger_rec r = tl_rec(i);
        assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    }
    rt_ledger_close(l);
    const char *files[] = {path};
    assert_verifies(files, 1, 5);

    /* A complete last line whose MAC fails while the one before verifies is torn too. */
    char **lines;
    size_t nl = tl_lines(good, &lines);
    f = fopen(path, "ab");
    fprintf(f, "%.*s\n", (int)strlen(lines[2]) - 10, lines[2]);
    fclose(f);
    tl_lines_free(lines, nl);
    tl_write_records(path, 5, 1, NULL);
    assert_verifies(files, 1, 6);

    /* A file holding only a torn line becomes empty and starts the chain. */
    unlink(path);
    tl_write(path, "{\"seq\":1,\"ts", 12);
    tl_write_records(path, 0, 2, NULL);
    assert_verifies(files, 1, 2);
    free(good);
}

static void test_rotation_by_size(void **state)
{
    (void)state;
    struct rt_ledger_opts o = {.rotate_bytes = 2500};
    tl_write_records(path, 0, 6, &o);
    tl_write_records(path, 6, 6, &o); /* reopen: the head comes from the current file */
    char **files;
    size_t n;
    assert_int_equal(rt_ledger_files(path, &files, &n), WYE_OK);
    assert_true(n >= 3);
    assert_string_equal(files[n - 1], path);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        free(tl_read(files[i], &len));
        assert_true(len <= 2500);
    }
    assert_verifies((const char *const *)files, n, 12);

    /* Leaving out the oldest or a middle file breaks the chain, naming the record. */
    struct wye_buf rep;
    assert_int_equal(tl_verify((const char *const *)files + 1, n - 1, NULL, 0, &rep, NULL),
                     WYE_ERR_PARSE);
    assert_non_null(strstr(rep.data, "chain broken: prev is not the chain's start"));
    wye_buf_cleanup(&rep);
    const char *skip[] = {files[0], files[2]};
    assert_int_equal(tl_verify(skip, 2, NULL, 0, &rep, NULL), WYE_ERR_PARSE);
    assert_non_null(strstr(rep.data, "a record was deleted or reordered"));
    assert_non_null(strstr(rep.data, files[2]));
    wye_buf_cleanup(&rep);

    /* A crash right after a rotation leaves no current file: the chain continues from the
     * newest rotated one. */
    unlink(path);
    rt_ledger_files_free(files, n);
    assert_int_equal(rt_ledger_files(path, &files, &n), WYE_OK);
    size_t before = n;
    uint64_t records_before;
    assert_int_equal(tl_verify((const char *const *)files, n, NULL, 0, &rep, &records_before),
                     WYE_OK);
    wye_buf_cleanup(&rep);
    rt_ledger_files_free(files, n);
    tl_write_records(path, 12, 1, &o);
    assert_int_equal(rt_ledger_files(path, &files, &n), WYE_OK);
    assert_int_equal(n, before + 1);
    assert_verifies((const char *const *)files, n, records_before + 1);
    rt_ledger_files_free(files, n);
}

static void test_rotation_daily(void **state)
{
    (void)state;
    struct rt_ledger_opts o = {.rotate_daily = true};
    struct rt_ledger *l = tl_open(path, &o);
    assert_non_null(l);
    for (int i = 0; i < 5; i++) {
        struct rt_ledger_rec r = tl_rec(i);
        r.ts_ms = TL_TS0 + (i < 3 ? 0 : INT64_C(86400000)) + i; /* 3 today, 2 tomorrow */
        assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    }
    rt_ledger_close(l);
    char **files;
    size_t n;
    assert_int_equal(rt_ledger_files(path, &files, &n), WYE_OK);
    assert_int_equal(n, 2);
    char want[700];
    snprintf(want, sizeof(want), "%s.000000000003", path);
    assert_string_equal(files[0], want);
    assert_verifies((const char *const *)files, n, 5);
    rt_ledger_files_free(files, n);
}

static void test_key_never_leaks(void **state)
{
    (void)state;
    /* From the environment, as text. */
    const char *secret = "env-secret-ledger-key-XYZ-0123456789";
    setenv("WYE_LEDGER_KEY", secret, 1);
    uint8_t key[RT_LEDGER_KEY_MAX];
    size_t key_len = 0;
    char msg[512];
    assert_int_equal(rt_ledger_key_from_env(path, true, key, &key_len, msg, sizeof(msg)), WYE_OK);
    assert_int_equal(key_len, strlen(secret));
    assert_memory_equal(key, secret, key_len);
    struct rt_ledger_opts o = {.key = key, .key_len = key_len};
    tl_write_records(path, 0, 3, &o);
    char *text = tl_read(path, NULL);
    char hex[2 * RT_LEDGER_KEY_MAX + 1];
    wye_hex_encode(key, key_len, hex);
    assert_null(strstr(text, secret));
    assert_null(strstr(text, hex));
    free(text);
    /* As hex. */
    setenv("WYE_LEDGER_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 1);
    assert_int_equal(rt_ledger_key_from_env(path, true, key, &key_len, msg, sizeof(msg)), WYE_OK);
    assert_int_equal(key_len, 32);
    assert_int_equal(key[1], 0x11);
    /* Too short: a clear error that does not repeat it. */
    setenv("WYE_LEDGER_KEY", "short-secret-value", 1);
    assert_int_equal(rt_ledger_key_from_env(path, true, key, &key_len, msg, sizeof(msg)),
                     WYE_ERR_INVAL);
    assert_non_null(strstr(msg, "WYE_LEDGER_KEY must be"));
    assert_null(strstr(msg, "short-secret-value"));
    unsetenv("WYE_LEDGER_KEY");

    /* No variable: without create it is NOTFOUND; with create a 0600 key file is made once
     * and reused. */
    assert_int_equal(rt_ledger_key_from_env(path, false, key, &key_len, msg, sizeof(msg)),
                     WYE_ERR_NOTFOUND);
    assert_non_null(strstr(msg, "ledger.jsonl.key"));
    char logname[700];
    int fd = log_fd_begin(logname, sizeof(logname));
    assert_int_equal(rt_ledger_key_from_env(path, true, key, &key_len, msg, sizeof(msg)), WYE_OK);
    char *log = log_fd_end(fd, logname);
    assert_int_equal(key_len, 32);
    char kpath[700];
    snprintf(kpath, sizeof(kpath), "%s.key", path);
    struct stat st;
    assert_int_equal(stat(kpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    wye_hex_encode(key, key_len, hex);
    assert_null(strstr(log, hex));
    free(log);
    uint8_t again[RT_LEDGER_KEY_MAX];
    size_t again_len;
    assert_int_equal(rt_ledger_key_from_env(path, false, again, &again_len, msg, sizeof(msg)),
                     WYE_OK);
    assert_int_equal(again_len, 32);
    assert_memory_equal(again, key, 32);
    /* A damaged key file is named, not used. */
    tl_write(kpath, "zz\n", 3);
    assert_int_equal(rt_ledger_key_from_env(path, false, again, &again_len, msg, sizeof(msg)),
                     WYE_ERR_PARSE);
    assert_non_null(strstr(msg, "is malformed"));
    unlink(kpath);
}

static void test_bad_args(void **state)
{
    (void)state;
    struct rt_ledger *l = NULL;
    char msg[256];
    struct rt_ledger_opts o = {.path = path, .key = (const uint8_t *)"short", .key_len = 5};
    assert_int_equal(rt_ledger_open(&o, &l, msg, sizeof(msg)), WYE_ERR_INVAL);
    assert_non_null(strstr(msg, "key must be"));
    /* reasons_json that is not an array is refused before anything is queued. */
    l = tl_open(path, NULL);
    assert_non_null(l);
    struct rt_ledger_rec r = tl_rec(1);
    r.reasons_json = "{\"not\":\"an array\"}";
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_ERR_INVAL);
    r.reasons_json = "[1,2";
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_ERR_INVAL);
    /* A body past the record's cap (the reasons are written whole: 70,000 bytes here) is refused
     * with TOOBIG before anything is queued, although the writer formats the bodies. */
    size_t n_items = 35000; /* "[1,1,...,1]": 2 bytes an item */
    char *big = malloc(2 * n_items + 2);
    assert_non_null(big);
    big[0] = '[';
    for (size_t i = 0; i < n_items; i++) {
        big[1 + 2 * i] = '1';
        big[2 + 2 * i] = i + 1 < n_items ? ',' : ']';
    }
    big[2 * n_items + 1] = '\0';
    r = tl_rec(1);
    r.reasons_json = big;
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_ERR_TOOBIG);
    /* Long strings that escape to 6 bytes each are cut to the record's length and accepted. */
    char *ctl = malloc(4001);
    assert_non_null(ctl);
    memset(ctl, '\x01', 4000);
    ctl[4000] = '\0';
    r = tl_rec(1);
    r.error = ctl;
    r.model = ctl;
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    free(ctl);
    free(big);
    r = tl_rec(1);
    r.model = NULL;
    r.latency_ms = 0.0 / 0.0; /* NaN is written as null, the line stays JSON */
    assert_int_equal(rt_ledger_append(l, &r, NULL, NULL), WYE_OK);
    rt_ledger_close(l);
    const char *files[] = {path};
    assert_verifies(files, 1, 2);
    char *text = tl_read(path, NULL);
    assert_non_null(strstr(text, "\"model\":null"));
    assert_non_null(strstr(text, "\"latency_ms\":null"));
    free(text);
    /* A file that is not a ledger is refused on open, untouched. */
    char other[700];
    snprintf(other, sizeof(other), "%s/other.txt", dir);
    tl_write(other, "hello\nworld\n", 12);
    o = (struct rt_ledger_opts){.path = other};
    o.key = tl_key(&o.key_len);
    assert_int_equal(rt_ledger_open(&o, &l, msg, sizeof(msg)), WYE_ERR_AUTH);
    size_t len;
    free(tl_read(other, &len));
    assert_int_equal(len, 12);
    /* A missing file in verify is an IO error naming it. */
    const char *missing[] = {"/nonexistent/ledger.jsonl"};
    struct wye_buf rep;
    assert_int_equal(tl_verify(missing, 1, NULL, 0, &rep, NULL), WYE_ERR_IO);
    assert_non_null(strstr(rep.data, "/nonexistent/ledger.jsonl: cannot open"));
    wye_buf_cleanup(&rep);
}

static void test_random_corruption(void **state)
{
    (void)state;
    /* Random byte changes and truncations: verify, summary and open never crash, and any
     * change other than cutting whole records off the end is reported. */
    tl_write_records(path, 0, 8, NULL);
    size_t len;
    char *orig = tl_read(path, &len);
    char *buf = malloc(len + 1);
    const char *files[] = {path};
    srand(1234);
    for (int iter = 0; iter < 300; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        bool truncated_at_boundary = false;
        if (iter % 5 == 0) {
            n = (size_t)rand() % len;
            truncated_at_boundary = n == 0 || buf[n - 1] == '\n';
        } else {
            for (int k = 0; k < 1 + rand() % 3; k++) {
                buf[(size_t)rand() % len] = (char)(rand() % 256);
            }
        }
        tl_write(path, buf, n);
        bool changed = n != len || memcmp(buf, orig, len) != 0;
        struct wye_buf rep;
        enum wye_err err = tl_verify(files, 1, NULL, 0, &rep, NULL);
        if (!changed || truncated_at_boundary) {
            assert_int_equal(err, WYE_OK);
        } else {
            if (err != WYE_ERR_PARSE) {
                fprintf(stderr, "iteration %d: a change went unnoticed\n", iter);
            }
            assert_int_equal(err, WYE_ERR_PARSE);
        }
        wye_buf_cleanup(&rep);
        struct wye_buf out;
        wye_buf_init(&out, 1 << 20);
        assert_int_equal(rt_ledger_summary(files, 1, INT64_MIN, RT_LEDGER_BY_MODEL, &out, NULL),
                         WYE_OK);
        wye_buf_cleanup(&out);
        /* Open either refuses with a message or cuts a torn end and then holds a chain. */
        struct rt_ledger_opts o = {.path = path};
        o.key = tl_key(&o.key_len);
        struct rt_ledger *l = NULL;
        char msg[512];
        wye_log_set_level(WYE_LOG_OFF);
        err = rt_ledger_open(&o, &l, msg, sizeof(msg));
        wye_log_set_level(WYE_LOG_INFO);
        if (err == WYE_OK) {
            rt_ledger_close(l);
        } else {
            assert_true(strlen(msg) > 0);
        }
    }
    free(buf);
    free(orig);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    tl_write_records(path, 0, 3, NULL);
    size_t key_len;
    const uint8_t *key = tl_key(&key_len);
    /* open */
    int ok_at = -1;
    for (long n = 0; n < 200 && ok_at < 0; n++) {
        struct rt_ledger_opts o = {.path = path, .key = key, .key_len = key_len};
        struct rt_ledger *l = NULL;
        char msg[256];
        wye_alloc_fail_after(n);
        enum wye_err err = rt_ledger_open(&o, &l, msg, sizeof(msg));
        wye_alloc_fail_after(-1);
        if (err == WYE_OK) {
            ok_at = (int)n;
            rt_ledger_close(l);
        } else {
            assert_int_equal(err, WYE_ERR_NOMEM);
            assert_null(l);
        }
    }
    assert_true(ok_at > 0);
    /* append (the writer may also meet the failure: its records fail, nothing breaks) */
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    ok_at = -1;
    for (long n = 0; n < 200 && ok_at < 0; n++) {
        struct rt_ledger_rec r = tl_rec(3);
        wye_alloc_fail_after(n);
        enum wye_err err = rt_ledger_append(l, &r, NULL, NULL);
        wye_alloc_fail_after(-1);
        if (err == WYE_OK) {
            ok_at = (int)n;
        } else {
            /* cJSON cannot tell a failed allocation from bad text in reasons_json. */
            assert_true(err == WYE_ERR_NOMEM || err == WYE_ERR_INVAL);
        }
    }
    assert_true(ok_at > 0);
    rt_ledger_close(l);
    const char *files[] = {path};
    assert_verifies(files, 1, 4);
    /* verify */
    ok_at = -1;
    for (long n = 0; n < 200 && ok_at < 0; n++) {
        struct wye_buf rep;
        wye_buf_init(&rep, 1 << 20);
        uint64_t nr;
        char last[65];
        wye_alloc_fail_after(n);
        enum wye_err err = rt_ledger_verify(files, 1, key, key_len, &rep, &nr, last);
        wye_alloc_fail_after(-1);
        wye_buf_cleanup(&rep);
        if (err == WYE_OK) {
            ok_at = (int)n;
        } else {
            /* A JSON parse that fails for lack of memory reads as a bad record. */
            assert_true(err == WYE_ERR_NOMEM || err == WYE_ERR_PARSE);
        }
    }
    assert_true(ok_at > 0);
}

int main(void)
{
    wye_alloc_install_cjson_hooks();
    assert_int_equal(wye_crypto_init(), WYE_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_append_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_cb_order_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_policy_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_edit_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_edit_mac, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_delete_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_delete_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_insert_forged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_last_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_daily, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_never_leaks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
