/* The cost/latency ledger: every finished chat request appends one JSON line to an append-only
 * file whose records are chained with HMAC-SHA256 (each record's MAC covers the previous MAC),
 * so an edited, deleted, inserted or reordered record is detected by rt_ledger_verify. An
 * append on an idle ledger is written on the caller's thread; otherwise it is queued for a
 * writer thread, which batches. See docs/ledger.md for the record format, crash safety and what
 * a chain cannot detect. */
#ifndef WYE_ROUTER_LEDGER_H
#define WYE_ROUTER_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define RT_LEDGER_KEY_MIN 32  /* bytes */
#define RT_LEDGER_KEY_MAX 256 /* bytes */
#define RT_LEDGER_DEFAULT_PATH "wye-ledger.jsonl"

struct rt_ledger;

/* One finished request. Strings are borrowed for the call; NULL is written as null. */
struct rt_ledger_rec {
    int64_t ts_ms; /* wall clock, ms since the epoch (when the request finished) */
    const char *request_id;
    const char *key_name; /* the API key's name, never its secret */
    const char *route;    /* "local" | "remote" */
    const char *model;
    const char *status;       /* "ok" | "error" | "cancelled" */
    const char *error;        /* message or NULL */
    const char *reasons_json; /* a JSON array's text, or NULL ([] is written) */
    const char *run_id;
    const char *agent; /* NULL unless an agent made the call */
    double score;      /* < 0: not scored (null) */
    int64_t prompt_tokens, completion_tokens;
    bool usage_estimated; /* the upstream reported no usage: tokens were counted here */
    double ttft_ms;       /* < 0: no first token (null) */
    double latency_ms;
    double cost_usd;
    double counterfactual_cost_usd; /* what it would have cost remotely */
    double saving_usd;
};

enum rt_ledger_fsync {
    RT_LEDGER_FSYNC_NONE = 0, /* the kernel writes back when it likes */
    RT_LEDGER_FSYNC_EVERY,    /* fdatasync before each done callback */
    RT_LEDGER_FSYNC_INTERVAL, /* fdatasync at most every fsync_interval_ms while dirty */
};

struct rt_ledger_opts {
    const char *path;   /* the current file; rotated files are "<path>.<seq>" */
    const uint8_t *key; /* HMAC key bytes (copied) */
    size_t key_len;     /* RT_LEDGER_KEY_MIN..RT_LEDGER_KEY_MAX */
    enum rt_ledger_fsync fsync;
    int64_t fsync_interval_ms; /* for RT_LEDGER_FSYNC_INTERVAL; <= 0 means 1000 */
    uint64_t rotate_bytes;     /* rotate before a record would pass this size; 0: off */
    bool rotate_daily;         /* rotate when a record's UTC day differs from the file's */
    size_t queue_cap;          /* records waiting for the writer; 0 means 4096 */
};

/* Called once per appended record: OK once the line was written (and fsynced when the policy
 * is EVERY), IO if it could not be, CANCELED if the ledger closed first. Either on the caller's
 * thread before rt_ledger_append returns (the ledger was idle: written inline), or on the
 * writer thread. Records appended one after the other get their callbacks in that order. No
 * ledger lock is held: it may append again, but must not close the ledger. */
typedef void (*rt_ledger_done_fn)(void *arg, enum wye_err status);

struct rt_ledger_stats {
    uint64_t records;      /* written since open */
    uint64_t write_errors; /* records that failed */
    uint64_t rotations;
    int64_t last_seq; /* of the newest written record; 0 if none ever */
};

/* Opens (creating 0600 if needed) the ledger, removes a torn last line left by a crash,
 * finds the chain's head and starts the writer thread. errbuf names the problem otherwise. */
enum wye_err rt_ledger_open(const struct rt_ledger_opts *opts, struct rt_ledger **out, char *errbuf,
                            size_t errlen);
/* Writes rec on the calling thread when nothing is queued or being written, done is given and
 * the policy is not EVERY (done has then run when this returns); otherwise copies rec and
 * queues it for the writer. OK: done (may be NULL) is called exactly once. AGAIN: the queue is
 * full; INVAL: a bad field (reasons_json not an array); CANCELED: closing; NOMEM/TOOBIG. On
 * error done is never called. Any thread. */
enum wye_err rt_ledger_append(struct rt_ledger *l, const struct rt_ledger_rec *rec,
                              rt_ledger_done_fn done, void *done_arg);
/* Writes everything queued, syncs (unless the policy is NONE), joins the writer and frees
 * the ledger. NULL is a no-op. */
void rt_ledger_close(struct rt_ledger *l);
/* Copies the counters. Any thread. */
void rt_ledger_stats(struct rt_ledger *l, struct rt_ledger_stats *out);

/* Finds the HMAC key: WYE_LEDGER_KEY (64+ hex digits are decoded; any other value of at least
 * 32 characters is used as bytes), else "<ledger_path>.key" (64 hex digits), created 0600
 * with random bytes when create is set (warning once). NOTFOUND when absent and !create. */
enum wye_err rt_ledger_key_from_env(const char *ledger_path, bool create, uint8_t *key,
                                    size_t *key_len, char *errbuf, size_t errlen);

/* The files of the ledger at path in chain order: the rotated "<path>.<seq>" files oldest
 * first, then path itself if it exists. *files and each entry are freed with
 * rt_ledger_files_free. */
enum wye_err rt_ledger_files(const char *path, char ***files, size_t *n);
void rt_ledger_files_free(char **files, size_t n);

/* Checks every record's MAC, seq and prev over files given in chain order (oldest first).
 * Appends one line per problem to report ("FILE:LINE: record seq N: ...") and sets *n_records
 * and last_mac_hex (the newest record's MAC, "" if none). OK: intact; PARSE: problems were
 * found; IO/NOMEM: could not check (errors also go to report). */
enum wye_err rt_ledger_verify(const char *const *files, size_t n_files, const uint8_t *key,
                              size_t key_len, struct wye_buf *report, uint64_t *n_records,
                              char last_mac_hex[65]);

enum rt_ledger_by {
    RT_LEDGER_BY_NONE = 0, /* only the total */
    RT_LEDGER_BY_ROUTE,
    RT_LEDGER_BY_MODEL,
    RT_LEDGER_BY_KEY,
    RT_LEDGER_BY_DAY,
    RT_LEDGER_BY_AGENT,
};

/* Parses "route", "model", "key", "day", "agent"; false if unknown. */
bool rt_ledger_by_parse(const char *s, enum rt_ledger_by *out);
/* Parses --since: "30m", "24h", "7d" (relative to now_ms) or "2026-11-01" (UTC midnight) or
 * an RFC 3339 time. false if malformed. */
bool rt_ledger_since_parse(const char *s, int64_t now_ms, int64_t *since_ms);

struct conf_config;
/* Opens the ledger at path with the key from WYE_LEDGER_KEY or "<path>.key" (created if
 * missing) and the fsync/rotation options of cfg's ledger section; the key is wiped from
 * the stack once the ledger holds its copy. On error errbuf names the problem. */
enum wye_err rt_ledger_open_conf(const struct conf_config *cfg, const char *path,
                                 struct rt_ledger **out, char *errbuf, size_t errlen);

/* Summarises the records with ts >= since_ms (INT64_MIN: all) grouped by `by` as one JSON
 * object {"since":..,"by":..,"groups":[{"group":..,"requests":..,...}],"total":{...},
 * "skipped_lines":N} appended to json_out. Malformed lines are skipped and named in
 * problems ("FILE:LINE: ..."; may be NULL). A missing file is an error (NOTFOUND). Does not
 * check MACs: that is rt_ledger_verify's job. */
enum wye_err rt_ledger_summary(const char *const *files, size_t n_files, int64_t since_ms,
                               enum rt_ledger_by by, struct wye_buf *json_out,
                               struct wye_buf *problems);

/* Called once per API key with remote spend in the UTC day and month of now_ms. */
typedef void (*rt_ledger_spend_fn)(void *arg, const char *key_name, double day_usd,
                                   double month_usd);
/* Rebuilds per-key remote spend (route "remote", cost_usd) for today and this month from the
 * ledger files, for budgets after a restart. Missing files count as empty. */
enum wye_err rt_ledger_spend_by_key(const char *const *files, size_t n_files, int64_t now_ms,
                                    rt_ledger_spend_fn fn, void *arg);

/* `wye ledger verify|summary ...`. */
int rt_cli_ledger(int argc, char **argv);

#endif
