/* Helpers for the ledger tests: a fixed key, a scratch directory under the build tree, sample
 * records, whole-file read/write and line surgery for tamper tests. Main thread only. */
#ifndef WYE_TESTS_ROUTER_LEDGER_UTIL_H
#define WYE_TESTS_ROUTER_LEDGER_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "router/ledger.h"

/* 2026-11-21T10:00:00Z */
#define TL_TS0 INT64_C(1795255200000)
#define TL_KEY_TEXT "tl-secret-key-0123456789-abcdefghij" /* 35 bytes, used as the key */

/* The test key's bytes and length. */
const uint8_t *tl_key(size_t *len);
/* Creates a fresh directory under the build tree; out gets its path. */
void tl_tmpdir(char *out, size_t n, const char *tag);
/* Removes every file in dir, then dir. */
void tl_rmdir(const char *dir);
/* A sample record number i (ts = TL_TS0 + i seconds). Strings point to static storage. */
struct rt_ledger_rec tl_rec(int i);
/* Opens a ledger at path with the test key and default options (or *opts if given). */
struct rt_ledger *tl_open(const char *path, const struct rt_ledger_opts *opts);
/* Appends n sample records numbered from first and closes. */
void tl_write_records(const char *path, int first, int n, const struct rt_ledger_opts *opts);
/* Reads a whole file (malloc'd, NUL-terminated); NULL if it does not exist. */
char *tl_read(const char *path, size_t *len);
void tl_write(const char *path, const char *data, size_t len);
/* Splits text into lines (pointers into a copy); returns the count. Free with tl_lines_free. */
size_t tl_lines(const char *text, char ***lines);
void tl_lines_free(char **lines, size_t n);
/* Writes lines[order[0]], lines[order[1]], ... each with '\n' to path. */
void tl_write_lines(const char *path, char **lines, const int *order, size_t n);
/* Verifies files with key (test key when NULL); report gets the problems (caller cleans). */
enum wye_err tl_verify(const char *const *files, size_t n, const uint8_t *key, size_t key_len,
                       struct wye_buf *report, uint64_t *n_records);
/* Counts the lines of a report. */
int tl_count_lines(const char *s);

#endif
