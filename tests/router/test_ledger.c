/* The ledger's writer and verifier: records chain and verify; each kind of tampering (edited
 * field, edited MAC, deleted middle/first record, inserted forgery, swapped records, wrong
 * key) is detected and the bad record named; a torn last line is cut on open and the chain
 * continues; size and daily rotation continue the chain across files (and verify fails when a
 * file is left out); done callbacks run on the writer thread in order; the key never reaches
 * the file or an error message; allocation failure in open, append and verify. The inline
 * path: an append on an idle ledger is written and acknowledged before it returns; concurrent
 * appenders (inline and queued mixed) keep a gapless chain in each thread's append order; a
 * failed inline write rolls back; close drains; a done may append again, and that record's
 * done comes after the first's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* The file at p holds exactly the len bytes of want. */
static void assert_file_is(const char *p, const char *want, size_t want_len)
{
    size_t len;
    char *now = tl_read(p, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(now, want, len);
    free(now);
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

/* Appends record tl_rec(rec) with on_done logging i into log (args[i] holds the argument). */
static void append_logged(struct rt_ledger *l, struct done_log *log, struct done_arg *args, int i,
                          int rec)
{
    args[i] = (struct done_arg){log, i};
    struct rt_ledger_rec r = tl_rec(rec);
    assert_int_equal(rt_ledger_append(l, &r, on_done, &args[i]), WYE_OK);
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
        append_logged(l, &log, args, i, i);
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
        append_logged(l, &log, args, i, 2 + i);
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
        append_logged(l, &log, args, i, i);
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
    assert_file_is(path, good, good_len);
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
    /* append. The hook is process-wide: the writer, woken by a queued record, could meet it
     * in the window before the loop disarms it and fail a record the append had accepted. So
     * one record goes first, outside the window, and is written: the writer's buffers have
     * their size, and it allocates nothing for the next record of that size. */
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    struct rt_ledger_rec warm = tl_rec(3);
    assert_int_equal(rt_ledger_append(l, &warm, NULL, NULL), WYE_OK);
    struct rt_ledger_stats st = {0};
    for (int ms = 0; ms < 10000 && st.records < 1; ms++) {
        rt_ledger_stats(l, &st);
        usleep(1000);
    }
    assert_int_equal(st.records, 1);
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
    assert_verifies(files, 1, 5);
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

/* ---- The inline path: an append on an idle ledger writes on the caller's thread ---------- */

static void test_inline_idle_append(void **state)
{
    (void)state;
    /* With nothing queued, each append has written its line and called done, on the caller's
     * thread, by the time it returns (none and interval policies; "always" queues, see
     * test_done_cb_order_thread). */
    enum rt_ledger_fsync policies[] = {RT_LEDGER_FSYNC_NONE, RT_LEDGER_FSYNC_INTERVAL};
    for (int p = 0; p < 2; p++) {
        static struct done_log log;
        static struct done_arg args[4];
        log = (struct done_log){.mu = PTHREAD_MUTEX_INITIALIZER, .caller = pthread_self()};
        unlink(path);
        /* an interval longer than the test: no sync of the writer's makes the ledger busy */
        struct rt_ledger_opts o = {.fsync = policies[p], .fsync_interval_ms = 600000};
        struct rt_ledger *l = tl_open(path, &o);
        assert_non_null(l);
        for (int i = 0; i < 4; i++) {
            append_logged(l, &log, args, i, i);
            assert_int_equal(log.n, i + 1);
            assert_int_equal(log.order[i], i);
            assert_int_equal(log.status[i], WYE_OK);
            /* the line is in the file already, not only acknowledged */
            char *text = tl_read(path, NULL);
            assert_int_equal(tl_count_lines(text), i + 1);
            free(text);
            struct rt_ledger_stats st;
            rt_ledger_stats(l, &st);
            assert_int_equal(st.records, (uint64_t)i + 1);
            assert_int_equal(st.last_seq, i + 1);
        }
        assert_int_equal(log.off_caller_thread, 0);
        rt_ledger_close(l);
        assert_int_equal(log.n, 4);
        const char *files[] = {path};
        assert_verifies(files, 1, 4);
    }
}

#define TI_THREADS 6
#define TI_PER_THREAD 300

struct ti_thread {
    struct rt_ledger *l;
    int t;
    atomic_int calls[TI_PER_THREAD]; /* done calls of each record (or 1 for one without) */
    atomic_int bad_status;
    atomic_int done_order_broken; /* a done came after a later record's of this thread */
    atomic_int last_done;
    int refused;
};

struct ti_arg {
    struct ti_thread *th;
    int i;
};

static struct ti_arg ti_args[TI_THREADS][TI_PER_THREAD];

static void ti_done(void *arg, enum wye_err status)
{
    struct ti_arg *a = arg;
    atomic_fetch_add(&a->th->calls[a->i], 1);
    if (status != WYE_OK) {
        atomic_fetch_add(&a->th->bad_status, 1);
    }
    if (atomic_exchange(&a->th->last_done, a->i) > a->i) {
        atomic_fetch_add(&a->th->done_order_broken, 1);
    }
}

/* Appends TI_PER_THREAD records "t<t>_<i>"; every 8th has no done callback, so it always goes
 * through the queue and the appends after it must not overtake it. Short pauses (0.1 to
 * 0.4 ms, mostly) let the ledger go idle, so that appends take the inline path too. */
static void *ti_main(void *arg)
{
    struct ti_thread *th = arg;
    for (int i = 0; i < TI_PER_THREAD; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%d_%06d", th->t, i);
        struct rt_ledger_rec r = {
            .ts_ms = TL_TS0 + i,
            .request_id = id,
            .key_name = "team-a",
            .route = "remote",
            .model = "gpt-big",
            .status = "ok",
            .reasons_json = "[\"code\"]",
            .score = 0.5,
            .prompt_tokens = 100 + i,
            .completion_tokens = 20,
            .ttft_ms = 50,
            .latency_ms = 400,
            .cost_usd = 0.001,
            .counterfactual_cost_usd = 0.001,
        };
        ti_args[th->t][i] = (struct ti_arg){th, i};
        bool with_done = i % 8 != 7;
        enum wye_err err = WYE_ERR_AGAIN;
        for (int tries = 0; err == WYE_ERR_AGAIN && tries < 10000; tries++) {
            err = rt_ledger_append(th->l, &r, with_done ? ti_done : NULL, &ti_args[th->t][i]);
            if (err == WYE_ERR_AGAIN) {
                usleep(100);
            }
        }
        if (err != WYE_OK) {
            th->refused++;
        }
        if (!with_done) {
            atomic_fetch_add(&th->calls[i], 1);
        }
        if ((i + th->t) % 3 != 0) {
            usleep(100 + 37 * (unsigned)((7 * i + th->t) % 10));
        }
    }
    return NULL;
}

/* Runs TI_THREADS appenders at once, closes the ledger as soon as they return and checks:
 * every done called exactly once, with OK, per thread in append order; every record in the
 * files once, each thread's in its append order; a gapless chain that verifies. */
static void ti_run(const struct rt_ledger_opts *o)
{
    static struct ti_thread th[TI_THREADS];
    struct rt_ledger *l = tl_open(path, o);
    assert_non_null(l);
    pthread_t tid[TI_THREADS];
    for (int t = 0; t < TI_THREADS; t++) {
        memset(&th[t], 0, sizeof(th[t]));
        th[t].l = l;
        th[t].t = t;
        atomic_store(&th[t].last_done, -1);
        assert_int_equal(pthread_create(&tid[t], NULL, ti_main, &th[t]), 0);
    }
    for (int t = 0; t < TI_THREADS; t++) {
        pthread_join(tid[t], NULL);
    }
    rt_ledger_close(l);
    for (int t = 0; t < TI_THREADS; t++) {
        assert_int_equal(th[t].refused, 0);
        assert_int_equal(atomic_load(&th[t].bad_status), 0);
        assert_int_equal(atomic_load(&th[t].done_order_broken), 0);
        for (int i = 0; i < TI_PER_THREAD; i++) {
            assert_int_equal(atomic_load(&th[t].calls[i]), 1);
        }
    }
    char **files;
    size_t n_files;
    assert_int_equal(rt_ledger_files(path, &files, &n_files), WYE_OK);
    assert_verifies((const char *const *)files, n_files, TI_THREADS * TI_PER_THREAD);
    int next[TI_THREADS] = {0};
    size_t total = 0;
    for (size_t f = 0; f < n_files; f++) {
        char *text = tl_read(files[f], NULL);
        char **lines;
        size_t n = tl_lines(text, &lines);
        for (size_t k = 0; k < n; k++) {
            int t = -1, i = -1;
            const char *id = strstr(lines[k], "\"request_id\":\"t");
            assert_non_null(id);
            assert_int_equal(sscanf(id, "\"request_id\":\"t%d_%d\"", &t, &i), 2);
            assert_true(t >= 0 && t < TI_THREADS);
            if (i != next[t]) {
                fprintf(stderr, "%s:%zu: thread %d's record %d, want %d\n", files[f], k + 1, t, i,
                        next[t]);
            }
            assert_int_equal(i, next[t]);
            next[t]++;
        }
        total += n;
        tl_lines_free(lines, n);
        free(text);
        unlink(files[f]);
    }
    assert_int_equal(total, TI_THREADS * TI_PER_THREAD);
    rt_ledger_files_free(files, n_files);
}

static void test_inline_concurrent_chain(void **state)
{
    (void)state;
    /* none: mostly inline. interval, 1 ms: the writer's syncs hold the ledger now and then, so
     * appends meet a busy ledger and queue, and a queue of 16 fills (AGAIN, retried). Size
     * rotation: appends near a rotation queue and the writer rotates. */
    struct rt_ledger_opts none = {.fsync = RT_LEDGER_FSYNC_NONE};
    ti_run(&none);
    struct rt_ledger_opts interval = {
        .fsync = RT_LEDGER_FSYNC_INTERVAL, .fsync_interval_ms = 1, .queue_cap = 16};
    ti_run(&interval);
    struct rt_ledger_opts rotating = {.rotate_bytes = 64 << 10};
    ti_run(&rotating);
}

static void test_inline_write_failure(void **state)
{
    (void)state;
    /* A file size limit makes the 4th line's write stop part way (then EFBIG): the inline
     * append's done gets IO before it returns, the partial line is cut off and the chain's
     * head rewound, so the next record takes seq 4 and chains onto record 3. */
    static struct done_log log;
    static struct done_arg args[5];
    log = (struct done_log){.mu = PTHREAD_MUTEX_INITIALIZER, .caller = pthread_self()};
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    for (int i = 0; i < 3; i++) {
        append_logged(l, &log, args, i, i);
    }
    size_t good_len;
    char *good = tl_read(path, &good_len);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    struct rlimit lim = {.rlim_cur = good_len + 100, .rlim_max = old.rlim_max};
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    char logname[700];
    int fd = log_fd_begin(logname, sizeof(logname));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    args[3] = (struct done_arg){&log, 3};
    struct rt_ledger_rec r = tl_rec(3);
    enum wye_err err = rt_ledger_append(l, &r, on_done, &args[3]);
    int n_after = log.n;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_sig);
    char *text = log_fd_end(fd, logname);
    assert_int_equal(err, WYE_OK);
    assert_int_equal(n_after, 4);
    assert_int_equal(log.status[3], WYE_ERR_IO);
    assert_non_null(strstr(text, "ledger: write to"));
    free(text);
    assert_file_is(path, good, good_len);
    struct rt_ledger_stats st;
    rt_ledger_stats(l, &st);
    assert_int_equal(st.records, 3);
    assert_int_equal(st.write_errors, 1);
    assert_int_equal(st.last_seq, 3);
    args[4] = (struct done_arg){&log, 4};
    r = tl_rec(4);
    assert_int_equal(rt_ledger_append(l, &r, on_done, &args[4]), WYE_OK);
    assert_int_equal(log.n, 5);
    assert_int_equal(log.status[4], WYE_OK);
    assert_int_equal(log.off_caller_thread, 0);
    rt_ledger_close(l);
    const char *files[] = {path};
    assert_verifies(files, 1, 4);
    char *now = tl_read(path, NULL);
    assert_non_null(strstr(now, "{\"seq\":4,\"ts\":\"2026-11-21T10:00:04.000Z\",\"request_id\":"
                                "\"req_000004\""));
    free(now);
    free(good);
}

static void test_inline_close_drains(void **state)
{
    (void)state;
    /* Records queued (no done callback) ahead of appends with one: those queue behind them,
     * and a close right away writes them all, syncs, and calls every done once, with OK. */
    static struct done_log log;
    static struct done_arg args[200];
    log = (struct done_log){.mu = PTHREAD_MUTEX_INITIALIZER, .caller = pthread_self()};
    struct rt_ledger_opts o = {.fsync = RT_LEDGER_FSYNC_INTERVAL, .fsync_interval_ms = 60000};
    struct rt_ledger *l = tl_open(path, &o);
    assert_non_null(l);
    for (int i = 0; i < 200; i++) {
        args[i] = (struct done_arg){&log, i};
        struct rt_ledger_rec r = tl_rec(i);
        bool with_done = i % 10 != 0;
        assert_int_equal(rt_ledger_append(l, &r, with_done ? on_done : NULL, &args[i]), WYE_OK);
    }
    rt_ledger_close(l);
    assert_int_equal(log.n, 180);
    for (int k = 0, i = 0; i < 200; i++) {
        if (i % 10 != 0) {
            assert_int_equal(log.order[k], i);
            assert_int_equal(log.status[k], WYE_OK);
            k++;
        }
    }
    const char *files[] = {path};
    assert_verifies(files, 1, 200);
    char *text = tl_read(path, NULL);
    char **lines;
    size_t n = tl_lines(text, &lines);
    assert_int_equal(n, 200);
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "\"req_%06zu\"", i);
        assert_non_null(strstr(lines[i], want));
    }
    tl_lines_free(lines, n);
    free(text);
}

struct re_state {
    struct rt_ledger *l;
    pthread_t main;
    atomic_int a_done, b_done;
    bool a_on_writer, b_before_a_returned;
    enum wye_err b_err;
};

static void re_b_done(void *arg, enum wye_err status)
{
    struct re_state *s = arg;
    atomic_store(&s->b_done, status == WYE_OK ? 1 : -1);
}

/* A's done appends B, as a done that starts more work would. */
static void re_a_done(void *arg, enum wye_err status)
{
    struct re_state *s = arg;
    (void)status;
    s->a_on_writer = !pthread_equal(pthread_self(), s->main);
    struct rt_ledger_rec r = {.ts_ms = TL_TS0, .request_id = "req_b", .status = "ok"};
    s->b_err = rt_ledger_append(s->l, &r, re_b_done, s);
    s->b_before_a_returned = atomic_load(&s->b_done) != 0;
    atomic_store(&s->a_done, 1);
}

static void test_inline_done_reentry(void **state)
{
    (void)state;
    /* A done callback may append again, without deadlock: no lock is held while it runs.
     * While a queued record's done is still running (A's, on the writer), a new append (B)
     * must not be written and acknowledged inline ahead of it: it queues, and B's done comes
     * after A's returns. (A queues behind Z, which has no done; if the writer is quicker than
     * the next append, A goes inline, and the attempt is repeated.) */
    static struct re_state s;
    struct rt_ledger *l = tl_open(path, NULL);
    assert_non_null(l);
    int on_writer = 0, records = 0;
    for (int attempt = 0; attempt < 50 && on_writer < 3; attempt++) {
        memset(&s, 0, sizeof(s));
        s.l = l;
        s.main = pthread_self();
        struct rt_ledger_rec z = tl_rec(attempt);
        assert_int_equal(rt_ledger_append(l, &z, NULL, NULL), WYE_OK);
        struct rt_ledger_rec a = tl_rec(attempt);
        assert_int_equal(rt_ledger_append(l, &a, re_a_done, &s), WYE_OK);
        for (int i = 0; i < 500 && !(atomic_load(&s.a_done) && atomic_load(&s.b_done)); i++) {
            usleep(1000);
        }
        assert_int_equal(atomic_load(&s.a_done), 1);
        assert_int_equal(s.b_err, WYE_OK);
        assert_int_equal(atomic_load(&s.b_done), 1);
        records += 3;
        if (s.a_on_writer) {
            on_writer++;
            assert_false(s.b_before_a_returned);
        }
    }
    rt_ledger_close(l);
    assert_true(on_writer > 0);
    const char *files[] = {path};
    assert_verifies(files, 1, (uint64_t)records);
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
        cmocka_unit_test_setup_teardown(test_inline_idle_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_concurrent_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_write_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_done_reentry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
