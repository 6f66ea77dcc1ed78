/* Internal pieces shared by the ledger's files: limits, the record body formatter, the check of
 * one line (MAC, seq, prev), time parsing and a capped line reader. No state; any thread. */
#ifndef WYE_ROUTER_LEDGER_INTERNAL_H
#define WYE_ROUTER_LEDGER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/buf.h"
#include "common/crypto.h"
#include "router/ledger.h"

#define LEDGER_LINE_MAX ((size_t)64 << 10) /* one record, newline included */
#define LEDGER_BODY_MAX ((size_t)60 << 10) /* what the caller formats */
#define LEDGER_STR_MAX 1024                /* a string field is cut here (UTF-8 safe) */
#define LEDGER_HEX_LEN 64
/* A line ends with ,"mac":"<64 hex>"} and the MAC covers everything before it. */
#define LEDGER_MAC_PREFIX ",\"mac\":\""
#define LEDGER_MAC_SUFFIX_LEN (sizeof(LEDGER_MAC_PREFIX) - 1 + LEDGER_HEX_LEN + 2)
#define LEDGER_ROTATED_DIGITS 12

/* What one line says about itself. */
struct ledger_line {
    int64_t seq;
    int64_t ts_ms;
    uint8_t prev[WYE_SHA256_LEN];     /* as written in the record */
    uint8_t mac[WYE_SHA256_LEN];      /* as written in the record */
    uint8_t computed[WYE_SHA256_LEN]; /* HMAC of the covered bytes with our key */
    bool mac_ok;
};

/* Appends the record's members from "ts" to "agent" (no braces, no seq/prev/mac).
 * rec->reasons_json is written as given: pass ledger_reasons_compact's text (or NULL: []). */
enum wye_err ledger_format_body(const struct rt_ledger_rec *rec, struct wye_buf *out);
/* Checks that reasons_json is a JSON array and re-serialises it compactly into *out (free with
 * cJSON_free); *out stays NULL when the text is written as is (NULL or "[]"). INVAL if it is
 * not an array (or cJSON ran out of memory: it cannot tell), NOMEM. */
enum wye_err ledger_reasons_compact(const char *reasons_json, char **out);
/* How many bytes of s a record keeps: LEDGER_STR_MAX at most, not splitting UTF-8. */
size_t ledger_str_len(const char *s);
/* True if line has a record's shape: {"seq": first and ,"mac":"<64 hex>"} last (mac gets the
 * written MAC). Allocates nothing. */
bool ledger_line_shaped(const char *line, size_t len, uint8_t mac[WYE_SHA256_LEN]);
/* Checks one line (without its newline): structure, JSON, seq, prev and the MAC with h.
 * PARSE with why filled when it is not a ledger record; OK otherwise (see mac_ok). */
enum wye_err ledger_line_check(struct wye_hmac *h, const char *line, size_t len,
                               struct ledger_line *out, char *why, size_t whylen);
/* Parses "YYYY-MM-DDTHH:MM:SS[.mmm]Z" (or +00:00); false if malformed. */
bool ledger_parse_ts(const char *s, int64_t *ms);

/* Calls fn for each line of f: complete says the line ended with a newline; a line longer
 * than LEDGER_LINE_MAX is passed with too_long set and data cut. fn returning non-OK stops. */
typedef enum wye_err (*ledger_line_fn)(void *arg, const char *line, size_t len, uint64_t lineno,
                                       bool complete, bool too_long);
enum wye_err ledger_lines_foreach(FILE *f, ledger_line_fn fn, void *arg);

/* write(2) until done, retrying EINTR; IO with errno set on failure. */
enum wye_err ledger_write_all(int fd, const char *p, size_t n);
/* fsyncs the directory holding path (best effort), so a new or renamed name is durable. */
void ledger_fsync_dir(const char *path);

#endif
