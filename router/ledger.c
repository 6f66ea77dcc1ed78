/* The ledger's writer: open (recovery of a torn last line, finding the chain's head), the
 * writer thread (MAC chaining, write(2), fsync policy, rotation, done callbacks), append and
 * close. rt_ledger_append runs on the caller's thread (the upstream thread, an engine worker,
 * or the owner's thread at shutdown): it writes the record itself when the ledger is idle, and
 * otherwise copies the record's strings into one job for the writer thread.
 *
 * DESIGN: a record's MAC covers its own bytes up to ",\"mac\"", which include "prev", the MAC
 * of the record before; so the MACs form a chain that continues across rotated files. The
 * file and the chain's head are guarded by mu, held by whoever writes. The writer takes
 * whatever is queued as one batch: it builds the lines in one buffer, writes them with one
 * write(2) (O_APPEND), syncs per policy, releases mu and then calls each done callback in
 * order. An append that finds no record queued or unacknowledged (n_pending) and mu free
 * writes its one line the same way under mu and calls its done callback before returning, so
 * a request's end costs no hand-off to the writer and back; under load, with fsync "always"
 * or near a rotation it queues as before, so the queue never overtakes a record. If a write
 * fails the file is truncated back and the chain's head rewound, so a failed batch or line
 * leaves no trace and later records chain onto the last written one. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "router/ledger_internal.h"

#define LEDGER_QUEUE_DEFAULT 4096
#define LEDGER_BATCH_MAX 256                   /* records per write(2) */
#define LEDGER_BATCH_BYTES ((size_t)256 << 10) /* start writing past this */
#define LEDGER_OUT_MAX (LEDGER_BATCH_BYTES + LEDGER_LINE_MAX)
#define LEDGER_MS_PER_DAY INT64_C(86400000)
/* A body's bytes besides its strings' (keys, quotes, time, numbers): well under this. */
#define LEDGER_FIXED_MAX ((size_t)2048)
#define LEDGER_BODY_RESERVE ((size_t)4095) /* + NUL: a 4 KiB buffer */

/* One queued record: the caller's record with every string copied (already cut to what the
 * record keeps) into text[], so the writer formats it and the caller's thread only copies. */
struct ledger_job {
    struct wye_qnode node;
    struct ledger_job *next; /* in the writer's batch */
    rt_ledger_done_fn done;
    void *done_arg;
    enum wye_err status;      /* writer thread */
    struct rt_ledger_rec rec; /* its strings point into text[]; reasons_json is compact */
    char text[];
};

struct rt_ledger {
    char *path;
    enum rt_ledger_fsync fsync;
    int64_t fsync_interval_ms;
    uint64_t rotate_bytes;
    bool rotate_daily;
    struct wye_queue q;
    pthread_t writer;
    bool writer_started; /* opening/closing thread */
    atomic_bool closing;
    /* Records queued and not yet acknowledged (done called): while any, appends queue behind
     * them, so the file's order and the done callbacks' order follow the appends'. */
    atomic_size_t n_pending;

    /* Guarded by mu: the writer thread or an appender on the inline path (the opening thread
     * before the writer starts). Never held while a done callback runs. */
    pthread_mutex_t mu;
    struct wye_hmac *hmac;
    int fd;
    int64_t seq;                  /* of the newest written record; 0: none ever */
    uint8_t head[WYE_SHA256_LEN]; /* its MAC; zeros before the first record */
    uint64_t file_size;
    int64_t file_day;           /* UTC day of the current file's newest record; -1: none */
    uint64_t rotate_retry_size; /* after a failed rotation, don't retry below this size */
    struct wye_buf out;         /* the batch's lines */
    struct wye_buf body;        /* one record's body, formatted here; reused */
    struct ledger_job *batch, **batch_tail;
    int64_t batch_seq, batch_day; /* state to rewind to if the batch's write fails */
    uint8_t batch_head[WYE_SHA256_LEN];
    uint64_t batch_size;
    struct ledger_job *acked, **acked_tail; /* written; done callbacks due once mu is free */
    /* Written under mu; atomic so that the idle writer can read them without taking mu, which
     * would make an appender's trylock fail and send its record the slow way. */
    atomic_bool dirty; /* written but not synced */
    _Atomic int64_t last_sync_ns;

    atomic_uint_fast64_t n_records, n_write_errors, n_rotations;
    atomic_int_fast64_t last_seq;
};

static int64_t day_of(int64_t ms)
{
    return ms >= 0 ? ms / LEDGER_MS_PER_DAY : (ms - LEDGER_MS_PER_DAY + 1) / LEDGER_MS_PER_DAY;
}

enum wye_err ledger_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return WYE_ERR_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return WYE_OK;
}

void ledger_fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? wye_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : wye_strdup(".");
    if (!dir) {
        return;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    wye_free(dir);
}

/* ---- Recovery ---------------------------------------------------------------------------- */

/* Checks the last line of buf[0..end) (end > 0, buf[end-1] == '\n'); *start gets where it
 * begins. Returns 1 if it verifies, 0 if not, -1 if it does not start inside buf. */
static int check_last_line(struct wye_hmac *h, const char *buf, size_t end, bool buf_is_whole,
                           size_t *start, struct ledger_line *line)
{
    size_t s = 0;
    for (size_t i = end - 1; i > 0; i--) {
        if (buf[i - 1] == '\n') {
            s = i;
            break;
        }
    }
    if (s == 0 && !buf_is_whole) {
        return -1;
    }
    *start = s;
    char why[128];
    if (ledger_line_check(h, buf + s, end - 1 - s, line, why, sizeof(why)) != WYE_OK) {
        return 0;
    }
    return line->mac_ok ? 1 : 0;
}

/* Keeps the bytes about to be cut in "<name>.torn" (appended, 0600), so that an edited last
 * record is not erased without a trace. Best effort. */
static void save_torn(const char *name, const char *p, size_t n)
{
    size_t len = strlen(name) + sizeof(".torn");
    char *torn = wye_malloc(len);
    if (!torn) {
        return;
    }
    snprintf(torn, len, "%s.torn", name);
    int fd = open(torn, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        if (ledger_write_all(fd, p, n) == WYE_OK && (n == 0 || p[n - 1] != '\n')) {
            (void)ledger_write_all(fd, "\n", 1);
        }
        close(fd);
    }
    wye_free(torn);
}

/* Finds the newest record of the file open at fd. With may_truncate, a torn last line (no
 * newline, not a record, or a MAC that fails while the line before verifies) is cut away.
 * *empty: no record is left. */
static enum wye_err tail_head(struct wye_hmac *h, int fd, const char *name, bool may_truncate,
                              struct ledger_line *last, bool *empty, char *errbuf, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        char eb[128];
        snprintf(errbuf, errlen, "cannot stat %s: %s", name, wye_strerror(errno, eb, sizeof(eb)));
        return WYE_ERR_IO;
    }
    *empty = true;
    if (st.st_size == 0) {
        return WYE_OK;
    }
    uint64_t size = (uint64_t)st.st_size;
    size_t tail = size < 2 * LEDGER_LINE_MAX + 2 ? (size_t)size : 2 * LEDGER_LINE_MAX + 2;
    uint64_t off = size - tail;
    char *buf = wye_malloc(tail);
    if (!buf) {
        snprintf(errbuf, errlen, "out of memory reading %s", name);
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_OK;
    size_t got = 0;
    while (got < tail) {
        ssize_t r = pread(fd, buf + got, tail - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            char eb[128];
            snprintf(errbuf, errlen, "cannot read %s: %s", name,
                     r < 0 ? wye_strerror(errno, eb, sizeof(eb)) : "file shrank");
            err = WYE_ERR_IO;
            goto out_buf;
        }
        got += (size_t)r;
    }
    bool whole = off == 0;
    size_t end = tail;
    if (buf[end - 1] != '\n') {
        char *nl = memrchr(buf, '\n', end);
        if (!nl && !whole) {
            snprintf(errbuf, errlen, "%s: the last line is longer than %zu bytes: not a ledger",
                     name, LEDGER_LINE_MAX);
            err = WYE_ERR_PARSE;
            goto out_buf;
        }
        end = nl ? (size_t)(nl - buf) + 1 : 0;
    }
    size_t keep = end, start = 0;
    if (end > 0) {
        int ok = check_last_line(h, buf, end, whole, &start, last);
        if (ok < 0) {
            snprintf(errbuf, errlen, "%s: the last line is longer than %zu bytes: not a ledger",
                     name, LEDGER_LINE_MAX);
            err = WYE_ERR_PARSE;
            goto out_buf;
        }
        if (ok == 0) {
            /* Torn only if the record before it verifies: with a wrong key every record
             * fails, and valid records must never be cut away. */
            uint8_t probe[WYE_SHA256_LEN];
            bool is_record = ledger_line_shaped(buf + start, end - 1 - start, probe);
            size_t pstart = 0;
            int pok = start > 0 ? check_last_line(h, buf, start, whole, &pstart, last) : -2;
            if (pok == 1 || (pok == -2 && !is_record)) {
                keep = start;
            } else {
                snprintf(errbuf, errlen,
                         "%s: the last record does not verify with this key (wrong ledger key? "
                         "run 'wye ledger verify %s')",
                         name, name);
                err = WYE_ERR_AUTH;
                goto out_buf;
            }
        }
    }
    if (keep < tail) {
        if (!may_truncate) {
            snprintf(errbuf, errlen, "%s: ends with a torn record", name);
            err = WYE_ERR_PARSE;
            goto out_buf;
        }
        save_torn(name, buf + keep, tail - keep);
        if (ftruncate(fd, (off_t)(off + keep)) != 0 || fsync(fd) != 0) {
            char eb[128];
            snprintf(errbuf, errlen, "cannot truncate the torn end of %s: %s", name,
                     wye_strerror(errno, eb, sizeof(eb)));
            err = WYE_ERR_IO;
            goto out_buf;
        }
        WYE_WARN("ledger: %s: removed a torn last record (%zu bytes) left by a crash; the bytes "
                 "were kept in %s.torn",
                 name, tail - keep, name);
    }
    *empty = off + keep == 0;
out_buf:
    wye_free(buf);
    return err;
}

/* The chain's head when the current file is empty: the newest rotated file's last record. */
static enum wye_err head_from_rotated(struct rt_ledger *l, char *errbuf, size_t errlen)
{
    char **files = NULL;
    size_t n = 0;
    enum wye_err err = rt_ledger_files(l->path, &files, &n);
    if (err) {
        snprintf(errbuf, errlen, "cannot list the rotated files of %s: %s", l->path,
                 wye_err_str(err));
        return err;
    }
    const char *newest = NULL;
    for (size_t i = n; i-- > 0;) {
        if (strcmp(files[i], l->path) != 0) {
            newest = files[i];
            break;
        }
    }
    if (newest) {
        int fd = open(newest, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            char eb[128];
            snprintf(errbuf, errlen, "cannot open %s: %s", newest,
                     wye_strerror(errno, eb, sizeof(eb)));
            err = WYE_ERR_IO;
        } else {
            struct ledger_line last;
            bool empty;
            err = tail_head(l->hmac, fd, newest, false, &last, &empty, errbuf, errlen);
            close(fd);
            if (!err && !empty) {
                l->seq = last.seq;
                memcpy(l->head, last.mac, WYE_SHA256_LEN);
            }
        }
    }
    rt_ledger_files_free(files, n);
    return err;
}

/* ---- Writing: under mu, on the writer thread or an appender's ---------------------------- */

static void sync_now(struct rt_ledger *l, struct ledger_job *batch)
{
    if (fdatasync(l->fd) != 0) {
        char eb[128];
        WYE_ERROR("ledger: fdatasync %s failed: %s", l->path, wye_strerror(errno, eb, sizeof(eb)));
        for (struct ledger_job *j = batch; j; j = j->next) {
            if (j->status == WYE_OK) {
                j->status = WYE_ERR_IO;
            }
        }
    }
    l->dirty = false;
    l->last_sync_ns = wye_now_ns();
}

/* Writes the batch, syncs when the policy is "always" (before any done callback), counts it
 * and moves it to the acknowledged list, whose callbacks run once mu is released
 * (take_acked_locked, run_done). */
static void flush_locked(struct rt_ledger *l)
{
    struct ledger_job *batch = l->batch;
    if (!batch) {
        return;
    }
    if (l->out.len > 0) {
        if (ledger_write_all(l->fd, l->out.data, l->out.len) != WYE_OK) {
            char eb[128];
            WYE_ERROR("ledger: write to %s failed: %s; %zu bytes not written", l->path,
                      wye_strerror(errno, eb, sizeof(eb)), l->out.len);
            /* Cut any partial line so the file stays a valid chain, and rewind the head. */
            if (ftruncate(l->fd, (off_t)l->batch_size) != 0) {
                WYE_ERROR("ledger: cannot truncate %s after a failed write: %s", l->path,
                          wye_strerror(errno, eb, sizeof(eb)));
            }
            l->seq = l->batch_seq;
            memcpy(l->head, l->batch_head, WYE_SHA256_LEN);
            l->file_size = l->batch_size;
            l->file_day = l->batch_day;
            for (struct ledger_job *j = batch; j; j = j->next) {
                if (j->status == WYE_OK) {
                    j->status = WYE_ERR_IO;
                }
            }
        } else {
            l->dirty = true;
            if (l->fsync == RT_LEDGER_FSYNC_EVERY) {
                sync_now(l, batch);
            }
        }
    }
    atomic_store(&l->last_seq, l->seq);
    for (struct ledger_job *j = batch; j; j = j->next) {
        atomic_fetch_add(j->status == WYE_OK ? &l->n_records : &l->n_write_errors, 1);
    }
    *l->acked_tail = batch;
    l->acked_tail = l->batch_tail;
    l->batch = NULL;
    l->batch_tail = &l->batch;
    wye_buf_reset(&l->out);
}

static struct ledger_job *take_acked_locked(struct rt_ledger *l)
{
    struct ledger_job *acked = l->acked;
    l->acked = NULL;
    l->acked_tail = &l->acked;
    return acked;
}

/* Calls the done callbacks in order and frees the jobs, without mu: a callback passes the
 * answer's end on to the client and must not keep other appenders waiting (nor deadlock if
 * it appends again). */
static void run_done(struct ledger_job *j)
{
    while (j) {
        struct ledger_job *next = j->next;
        if (j->done) {
            j->done(j->done_arg, j->status);
        }
        wye_free(j);
        j = next;
    }
}

/* The interval policy promises at most about an interval of records lost to a power cut, not a
 * synced record per answer: its sync comes after the done callbacks, so no answer waits for the
 * disk (an fdatasync is ~0.5 ms here, and an answer's end waits for its done), and preferably
 * while no record is queued, so none waits behind it either. Under load that never leaves the
 * queue empty it still syncs, at twice the interval. Writer thread. */
static void interval_sync(struct rt_ledger *l)
{
    if (l->fsync != RT_LEDGER_FSYNC_INTERVAL || !atomic_load(&l->dirty) ||
        wye_now_ns() - atomic_load(&l->last_sync_ns) < l->fsync_interval_ms * WYE_NS_PER_MS) {
        return; /* nothing due: mu stays free for the appenders */
    }
    pthread_mutex_lock(&l->mu);
    if (l->dirty) {
        int64_t since = wye_now_ns() - l->last_sync_ns;
        int64_t every = l->fsync_interval_ms * WYE_NS_PER_MS;
        if (since >= 2 * every || (since >= every && wye_queue_len(&l->q) == 0)) {
            sync_now(l, NULL);
        }
    }
    pthread_mutex_unlock(&l->mu);
}

/* Moves the current file to "<path>.<seq of its newest record>" and starts a new one. */
static void rotate(struct rt_ledger *l)
{
    char eb[128];
    size_t n = strlen(l->path) + LEDGER_ROTATED_DIGITS + 8;
    char *name = wye_malloc(n);
    if (!name) {
        WYE_ERROR("ledger: cannot rotate %s: out of memory", l->path);
        goto out_retry;
    }
    snprintf(name, n, "%s.%0*lld", l->path, LEDGER_ROTATED_DIGITS, (long long)l->seq);
    struct stat st;
    if (lstat(name, &st) == 0) {
        WYE_ERROR("ledger: cannot rotate %s: %s already exists", l->path, name);
        goto out_name;
    }
    if (fdatasync(l->fd) != 0 || rename(l->path, name) != 0) {
        WYE_ERROR("ledger: cannot rotate %s to %s: %s", l->path, name,
                  wye_strerror(errno, eb, sizeof(eb)));
        goto out_name;
    }
    int fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* Keep appending to the renamed file: the chain stays whole, only its name is odd. */
        WYE_ERROR("ledger: cannot create %s after rotating: %s", l->path,
                  wye_strerror(errno, eb, sizeof(eb)));
        goto out_name;
    }
    close(l->fd);
    l->fd = fd;
    ledger_fsync_dir(l->path);
    l->file_size = 0;
    l->file_day = -1;
    l->dirty = false;
    atomic_fetch_add(&l->n_rotations, 1);
    wye_free(name);
    return;
out_name:
    wye_free(name);
out_retry:
    l->rotate_retry_size = l->file_size + (l->rotate_bytes ? l->rotate_bytes : 1);
}

static bool needs_rotation(struct rt_ledger *l, int64_t ts_ms, size_t line_len)
{
    if (l->file_size == 0 || l->file_size < l->rotate_retry_size) {
        return false;
    }
    if (l->rotate_bytes && l->file_size + line_len > l->rotate_bytes) {
        return true;
    }
    return l->rotate_daily && l->file_day >= 0 && day_of(ts_ms) != l->file_day;
}

/* Puts the next record's "{"seq":N," in buf (32 bytes) and returns the length of the line
 * that it and l->body make (with prev, the MAC and the newline). */
static size_t next_line(const struct rt_ledger *l, char *buf, size_t *seqlen)
{
    *seqlen = (size_t)snprintf(buf, 32, "{\"seq\":%lld,", (long long)l->seq + 1);
    return *seqlen + l->body.len + sizeof(",\"prev\":\"\"") - 1 + LEDGER_HEX_LEN +
           LEDGER_MAC_SUFFIX_LEN + 1;
}

/* Queues job's done callback in the batch (noting where to rewind to if it is the first). */
static void batch_add(struct rt_ledger *l, struct ledger_job *job)
{
    if (!l->batch) {
        l->batch_seq = l->seq;
        memcpy(l->batch_head, l->head, WYE_SHA256_LEN);
        l->batch_size = l->file_size;
        l->batch_day = l->file_day;
    }
    job->next = NULL;
    *l->batch_tail = job;
    l->batch_tail = &job->next;
    job->status = WYE_OK;
}

/* Chains the body in l->body onto the batch as job's record (rotating first if due). */
static void add_line(struct rt_ledger *l, struct ledger_job *job)
{
    char seqbuf[32];
    size_t seqlen;
    size_t line_len = next_line(l, seqbuf, &seqlen);
    if (needs_rotation(l, job->rec.ts_ms, line_len)) {
        flush_locked(l);
        rotate(l);
    }
    batch_add(l, job);

    size_t start = l->out.len;
    char hex[LEDGER_HEX_LEN + 1];
    uint8_t mac[WYE_SHA256_LEN];
    wye_hex_encode(l->head, WYE_SHA256_LEN, hex);
    enum wye_err err = wye_buf_reserve(&l->out, line_len);
    if (!err) {
        wye_buf_append(&l->out, seqbuf, seqlen);
        wye_buf_append(&l->out, l->body.data, l->body.len);
        wye_buf_printf(&l->out, ",\"prev\":\"%s\"", hex);
        wye_hmac_update(l->hmac, l->out.data + start, l->out.len - start);
        wye_hmac_final(l->hmac, mac);
        wye_hex_encode(mac, WYE_SHA256_LEN, hex);
        err = wye_buf_printf(&l->out, LEDGER_MAC_PREFIX "%s\"}\n", hex);
    }
    if (err || l->out.len - start != line_len) {
        WYE_ERROR("ledger: cannot build a record: %s", err ? wye_err_str(err) : "length");
        l->out.len = start;
        if (l->out.data) {
            l->out.data[start] = '\0';
        }
        job->status = err ? err : WYE_ERR_INTERNAL;
        return;
    }
    l->seq++;
    memcpy(l->head, mac, WYE_SHA256_LEN);
    l->file_size += line_len;
    l->file_day = day_of(job->rec.ts_ms);
}

/* Formats one queued record and chains it onto the batch. */
static void add_record(struct rt_ledger *l, struct ledger_job *job)
{
    wye_buf_reset(&l->body);
    enum wye_err ferr = ledger_format_body(&job->rec, &l->body);
    if (ferr) {
        /* the record never reaches the file: its done callback learns why, the chain goes on */
        WYE_ERROR("ledger: cannot format a record: %s", wye_err_str(ferr));
        batch_add(l, job);
        job->status = ferr;
        return;
    }
    add_line(l, job);
}

/* ---- The writer thread ------------------------------------------------------------------- */

/* How long the writer may sleep: forever, except under the interval policy: until the next
 * sync is due, or one interval when nothing is unsynced yet, because inline appends make the
 * file dirty without waking the writer (one wake-up per interval instead of one per record). */
static int64_t writer_timeout(struct rt_ledger *l)
{
    if (l->fsync != RT_LEDGER_FSYNC_INTERVAL) {
        return -1;
    }
    int64_t every = l->fsync_interval_ms * WYE_NS_PER_MS;
    int64_t t = atomic_load(&l->dirty) ? atomic_load(&l->last_sync_ns) + every - wye_now_ns()
                                       : every;
    return t < 0 ? 0 : t;
}

static void *writer_main(void *arg)
{
    struct rt_ledger *l = arg;
    (void)pthread_setname_np(pthread_self(), "wye-ledger");
    for (;;) {
        struct wye_qnode *node = wye_queue_pop(&l->q, writer_timeout(l));
        if (!node) {
            if (l->fsync == RT_LEDGER_FSYNC_INTERVAL && atomic_load(&l->dirty)) {
                pthread_mutex_lock(&l->mu);
                if (l->dirty) {
                    sync_now(l, NULL);
                }
                pthread_mutex_unlock(&l->mu);
            }
            if (atomic_load(&l->closing) && wye_queue_len(&l->q) == 0) {
                break;
            }
            continue;
        }
        /* Blocking here is fine: the holder is an appender writing one line. */
        pthread_mutex_lock(&l->mu);
        size_t n = 0;
        do {
            add_record(l, WYE_CONTAINER_OF(node, struct ledger_job, node));
        } while (++n < LEDGER_BATCH_MAX && l->out.len < LEDGER_BATCH_BYTES &&
                 (node = wye_queue_pop(&l->q, 0)) != NULL);
        flush_locked(l);
        struct ledger_job *acked = take_acked_locked(l);
        pthread_mutex_unlock(&l->mu);
        run_done(acked);
        /* Only now may an append write inline: its record and its done come after these. */
        atomic_fetch_sub(&l->n_pending, n);
        interval_sync(l);
    }
    /* rt_ledger_close syncs, once inline appends have stopped too. */
    return NULL;
}

/* ---- Public API -------------------------------------------------------------------------- */

enum wye_err rt_ledger_open(const struct rt_ledger_opts *opts, struct rt_ledger **out, char *errbuf,
                            size_t errlen)
{
    char eb[128];
    enum wye_err err = WYE_OK;
    *out = NULL;
    if (!opts || !opts->path || !*opts->path || !opts->key) {
        snprintf(errbuf, errlen, "ledger: no path or key given");
        return WYE_ERR_INVAL;
    }
    if (opts->key_len < RT_LEDGER_KEY_MIN || opts->key_len > RT_LEDGER_KEY_MAX) {
        snprintf(errbuf, errlen, "ledger: the key must be %d to %d bytes long", RT_LEDGER_KEY_MIN,
                 RT_LEDGER_KEY_MAX);
        return WYE_ERR_INVAL;
    }
    struct rt_ledger *l = wye_calloc(1, sizeof(*l));
    if (!l) {
        goto err_nomem;
    }
    l->fd = -1;
    l->fsync = opts->fsync;
    l->fsync_interval_ms = opts->fsync_interval_ms > 0 ? opts->fsync_interval_ms : 1000;
    l->rotate_bytes = opts->rotate_bytes;
    l->rotate_daily = opts->rotate_daily;
    l->file_day = -1;
    l->batch_tail = &l->batch;
    l->acked_tail = &l->acked;
    wye_buf_init(&l->out, LEDGER_OUT_MAX);
    wye_buf_init(&l->body, LEDGER_BODY_MAX);
    /* sized once for any record the router makes, so the writer does not allocate per record */
    if (wye_buf_reserve(&l->body, LEDGER_BODY_RESERVE) != WYE_OK) {
        goto err_free;
    }
    l->path = wye_strdup(opts->path);
    if (!l->path) {
        goto err_free;
    }
    l->hmac = wye_hmac_create(opts->key, opts->key_len);
    if (!l->hmac) {
        goto err_path;
    }
    if (wye_queue_init(&l->q, opts->queue_cap ? opts->queue_cap : LEDGER_QUEUE_DEFAULT)) {
        goto err_hmac;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        goto err_queue;
    }
    l->fd = open(l->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        snprintf(errbuf, errlen, "cannot open ledger %s: %s", l->path,
                 wye_strerror(errno, eb, sizeof(eb)));
        err = WYE_ERR_IO;
        goto err_mu;
    }
    struct ledger_line last = {0};
    bool empty;
    err = tail_head(l->hmac, l->fd, l->path, true, &last, &empty, errbuf, errlen);
    if (err) {
        goto err_fd;
    }
    if (empty) {
        err = head_from_rotated(l, errbuf, errlen);
        if (err) {
            goto err_fd;
        }
    } else {
        l->seq = last.seq;
        memcpy(l->head, last.mac, WYE_SHA256_LEN);
        l->file_day = day_of(last.ts_ms);
        off_t end = lseek(l->fd, 0, SEEK_END);
        l->file_size = end > 0 ? (uint64_t)end : 0;
    }
    atomic_store(&l->last_seq, l->seq);
    l->last_sync_ns = wye_now_ns();
    int rc = pthread_create(&l->writer, NULL, writer_main, l);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot start the ledger writer: %s",
                 wye_strerror(rc, eb, sizeof(eb)));
        err = WYE_ERR_IO;
        goto err_fd;
    }
    l->writer_started = true;
    *out = l;
    return WYE_OK;

err_nomem:
    snprintf(errbuf, errlen, "ledger: out of memory");
    return WYE_ERR_NOMEM;
err_fd:
    close(l->fd);
err_mu:
    pthread_mutex_destroy(&l->mu);
err_queue:
    wye_queue_cleanup(&l->q);
err_hmac:
    wye_hmac_destroy(l->hmac);
err_path:
    wye_free(l->path);
err_free:
    wye_buf_cleanup(&l->out);
    wye_buf_cleanup(&l->body);
    wye_free(l);
    if (err == WYE_OK) {
        goto err_nomem;
    }
    return err;
}

/* Copies s (as much of it as the record keeps) to *at; NULL stays NULL. */
static const char *job_str(char **at, const char *s, size_t n)
{
    if (!s) {
        return NULL;
    }
    char *d = *at;
    memcpy(d, s, n);
    d[n] = '\0';
    *at += n + 1;
    return d;
}

/* The record's string members, reasons last (written whole; the others are cut as the record
 * cuts them), so that one loop measures them and another copies them into a job. */
enum { REC_N_STR = 9 };

static void rec_strs(struct rt_ledger_rec *r, const char **f[REC_N_STR])
{
    f[0] = &r->request_id, f[1] = &r->key_name, f[2] = &r->route;
    f[3] = &r->model, f[4] = &r->status, f[5] = &r->error;
    f[6] = &r->run_id, f[7] = &r->agent, f[8] = &r->reasons_json;
}

/* The inline path: with no record queued or unacknowledged and mu free, the calling thread
 * formats, chains and writes rec itself (a few microseconds: formatting, one HMAC, one write(2)
 * to the page cache) and calls done before returning, instead of waking the writer, which would
 * wake whoever waits for done. That is the end of every request, so it saves two thread
 * hand-offs per request. It falls back to the queue (false, nothing done) when:
 * - no done: nobody waits for the record, so the writer may as well take the work;
 * - fsync "always": the sync (~0.5 ms) would block the caller, the upstream thread that serves
 *   every stream, and the writer's batches share one sync under load;
 * - records are queued or unacknowledged (n_pending): rec must not overtake them;
 * - mu is held (the writer's batch or sync, another appender): a trylock never makes the
 *   caller wait for the disk;
 * - a rotation is due: it syncs and renames, which is the writer's job.
 * rt_ledger_append is not called on the lws thread (records are appended when a backend
 * finishes, on the upstream thread or an engine worker; requests refused at submit get no
 * record); if it ever is, the inline work costs it less than the wake-ups it saves. */
static bool append_inline(struct rt_ledger *l, const struct rt_ledger_rec *r,
                          rt_ledger_done_fn done, void *done_arg, enum wye_err *err)
{
    if (!done || l->fsync == RT_LEDGER_FSYNC_EVERY || atomic_load(&l->n_pending) > 0 ||
        pthread_mutex_trylock(&l->mu) != 0) {
        return false;
    }
    /* Again under mu: a record queued since, and popped by the writer, must still go first. */
    if (atomic_load(&l->n_pending) > 0) {
        pthread_mutex_unlock(&l->mu);
        return false;
    }
    wye_buf_reset(&l->body);
    *err = ledger_format_body(r, &l->body);
    if (*err) {
        pthread_mutex_unlock(&l->mu); /* refused before anything is written; done not called */
        return true;
    }
    char seqbuf[32];
    size_t seqlen;
    if (needs_rotation(l, r->ts_ms, next_line(l, seqbuf, &seqlen))) {
        pthread_mutex_unlock(&l->mu);
        return false;
    }
    /* rec's strings are borrowed: they are used up before done, which may free them. */
    struct ledger_job job = {.done = done, .done_arg = done_arg, .rec = *r};
    add_line(l, &job);
    flush_locked(l);
    struct ledger_job *acked = take_acked_locked(l);
    pthread_mutex_unlock(&l->mu);
    WYE_ASSERT(acked == &job && !job.next);
    done(done_arg, job.status);
    return true;
}

enum wye_err rt_ledger_append(struct rt_ledger *l, const struct rt_ledger_rec *rec,
                              rt_ledger_done_fn done, void *done_arg)
{
    if (atomic_load(&l->closing)) {
        return WYE_ERR_CANCELED;
    }
    /* Checked here, not on the writer, so a bad array is refused before anything is queued. */
    char *reasons = NULL;
    enum wye_err err = ledger_reasons_compact(rec->reasons_json, &reasons);
    if (err) {
        return err;
    }
    struct rt_ledger_rec r = *rec;
    r.reasons_json = reasons ? reasons : rec->reasons_json;
    if (append_inline(l, &r, done, done_arg, &err)) {
        cJSON_free(reasons);
        return err;
    }
    /* Queued, the caller's thread only copies: the body's formatting (times, floats, escaping)
     * runs on the writer. */
    const char **f[REC_N_STR];
    rec_strs(&r, f);
    size_t lens[REC_N_STR];
    size_t total = 0;
    /* A body that might not fit LEDGER_BODY_MAX (escaping can take 6 bytes per byte) is
     * formatted here once as well, so that TOOBIG is still refused before anything is queued.
     * Records the router makes never come close. */
    size_t worst = LEDGER_FIXED_MAX;
    for (size_t i = 0; i < REC_N_STR; i++) {
        const char *v = *f[i];
        bool whole = i == REC_N_STR - 1;
        lens[i] = !v ? 0 : whole ? strlen(v) : ledger_str_len(v);
        total += v ? lens[i] + 1 : 0;
        worst += whole ? lens[i] : 6 * lens[i];
    }
    if (worst > LEDGER_BODY_MAX) {
        struct wye_buf body;
        wye_buf_init(&body, LEDGER_BODY_MAX);
        err = ledger_format_body(&r, &body);
        wye_buf_cleanup(&body);
        if (err) {
            cJSON_free(reasons);
            return err;
        }
    }
    struct ledger_job *job = wye_malloc(sizeof(*job) + total);
    if (!job) {
        cJSON_free(reasons);
        return WYE_ERR_NOMEM;
    }
    job->done = done;
    job->done_arg = done_arg;
    job->rec = r;
    rec_strs(&job->rec, f);
    char *at = job->text;
    for (size_t i = 0; i < REC_N_STR; i++) {
        *f[i] = job_str(&at, *f[i], lens[i]);
    }
    cJSON_free(reasons);
    /* Counted before the push, so that the writer never acknowledges it uncounted. */
    atomic_fetch_add(&l->n_pending, 1);
    err = wye_queue_push(&l->q, &job->node, NULL);
    if (err) {
        atomic_fetch_sub(&l->n_pending, 1);
        wye_free(job);
    }
    return err;
}

void rt_ledger_close(struct rt_ledger *l)
{
    if (!l) {
        return;
    }
    atomic_store(&l->closing, true);
    wye_queue_close(&l->q);
    if (l->writer_started) {
        pthread_join(l->writer, NULL);
    }
    /* Waits for an append still writing inline (it began before closing was set), then syncs
     * everything written: the writer's batches and inline lines alike. */
    pthread_mutex_lock(&l->mu);
    if (l->dirty && l->fsync != RT_LEDGER_FSYNC_NONE) {
        sync_now(l, NULL);
    }
    pthread_mutex_unlock(&l->mu);
    /* The writer drained the queue; anything left was pushed in a race with close. */
    struct wye_qnode *n = wye_queue_take_all(&l->q);
    while (n) {
        struct wye_qnode *next = n->next;
        struct ledger_job *job = WYE_CONTAINER_OF(n, struct ledger_job, node);
        if (job->done) {
            job->done(job->done_arg, WYE_ERR_CANCELED);
        }
        wye_free(job);
        n = next;
    }
    close(l->fd);
    pthread_mutex_destroy(&l->mu);
    wye_queue_cleanup(&l->q);
    wye_hmac_destroy(l->hmac);
    wye_buf_cleanup(&l->out);
    wye_buf_cleanup(&l->body);
    wye_free(l->path);
    wye_free(l);
}

void rt_ledger_stats(struct rt_ledger *l, struct rt_ledger_stats *out)
{
    out->records = atomic_load(&l->n_records);
    out->write_errors = atomic_load(&l->n_write_errors);
    out->rotations = atomic_load(&l->n_rotations);
    out->last_seq = atomic_load(&l->last_seq);
}

/* ---- Files ------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void rt_ledger_files_free(char **files, size_t n)
{
    if (!files) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        wye_free(files[i]);
    }
    wye_free(files);
}

static enum wye_err files_push(char ***files, size_t *n, size_t *cap, char *s)
{
    if (!s) {
        return WYE_ERR_NOMEM;
    }
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8, bytes;
        char **nf = wye_mul_size(nc, sizeof(char *), &bytes) ? NULL : wye_realloc(*files, bytes);
        if (!nf) {
            wye_free(s);
            return WYE_ERR_NOMEM;
        }
        *files = nf;
        *cap = nc;
    }
    (*files)[(*n)++] = s;
    return WYE_OK;
}

enum wye_err rt_ledger_files(const char *path, char ***out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0; /* with the slash */
    size_t baselen = strlen(base);
    char *dir = slash ? wye_strndup(path, dirlen) : wye_strdup(".");
    if (!dir) {
        return WYE_ERR_NOMEM;
    }
    char **files = NULL;
    size_t n = 0, cap = 0;
    enum wye_err err = WYE_OK;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while (!err && (e = readdir(d)) != NULL) { /* NOLINT(concurrency-mt-unsafe): own DIR */
            const char *nm = e->d_name;
            if (strlen(nm) != baselen + 1 + LEDGER_ROTATED_DIGITS ||
                memcmp(nm, base, baselen) != 0 || nm[baselen] != '.' ||
                strspn(nm + baselen + 1, "0123456789") != LEDGER_ROTATED_DIGITS) {
                continue;
            }
            size_t len = dirlen + strlen(nm) + 1;
            char *full = wye_malloc(len);
            if (full) {
                snprintf(full, len, "%.*s%s", (int)dirlen, path, nm);
            }
            err = files_push(&files, &n, &cap, full);
        }
        closedir(d);
    }
    wye_free(dir);
    if (!err && n > 1) {
        qsort(files, n, sizeof(char *), cmp_str);
    }
    struct stat st;
    if (!err && stat(path, &st) == 0) {
        err = files_push(&files, &n, &cap, wye_strdup(path));
    }
    if (err) {
        rt_ledger_files_free(files, n);
        return err;
    }
    *out = files;
    *n_out = n;
    return WYE_OK;
}
