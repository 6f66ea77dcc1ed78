/* `wye ledger verify`: walks ledger files in chain order, recomputes every record's MAC and
 * checks seq and prev against the record before, naming each bad record by file and line.
 * Runs on the calling thread (the CLI, or a later HTTP handler off the lws thread). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "router/ledger_internal.h"

#define VERIFY_PROBLEMS_MAX 50 /* named in the report; the rest are counted */

struct verify_state {
    struct wye_hmac *h;
    struct wye_buf *report;
    const char *file;
    uint64_t n_records;
    uint64_t n_problems;
    uint64_t n_mac_bad;
    /* The record before (the chain's start before the first). */
    bool have_prev;
    int64_t prev_seq;
    uint8_t prev_mac[WYE_SHA256_LEN];      /* as written */
    uint8_t prev_computed[WYE_SHA256_LEN]; /* with our key */
    bool prev_mac_ok;
    /* The newest record whose MAC verified. */
    bool have_good;
    int64_t good_seq;
    uint8_t good_mac[WYE_SHA256_LEN];
};

static enum wye_err problem(struct verify_state *st, uint64_t lineno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum wye_err problem(struct verify_state *st, uint64_t lineno, const char *fmt, ...)
{
    st->n_problems++;
    if (st->n_problems > VERIFY_PROBLEMS_MAX) {
        return WYE_OK;
    }
    enum wye_err err = wye_buf_printf(st->report, "%s:%" PRIu64 ": ", st->file, lineno);
    va_list ap;
    va_start(ap, fmt);
    if (!err) {
        err = wye_buf_vprintf(st->report, fmt, ap);
    }
    va_end(ap);
    if (!err) {
        err = wye_buf_append_str(st->report, "\n");
    }
    /* A report that cannot grow still fails the verification (n_problems counts). */
    return err == WYE_ERR_TOOBIG ? WYE_OK : err;
}

static enum wye_err on_line(void *arg, const char *line, size_t len, uint64_t lineno, bool complete,
                            bool too_long)
{
    struct verify_state *st = arg;
    if (too_long) {
        return problem(st, lineno, "not a ledger record (line longer than %zu bytes)",
                       LEDGER_LINE_MAX);
    }
    if (!complete) {
        return problem(st, lineno, "torn last line (no newline; a crash during a write?)");
    }
    struct ledger_line rec;
    char why[128];
    if (ledger_line_check(st->h, line, len, &rec, why, sizeof(why)) != WYE_OK) {
        return problem(st, lineno, "%s", why);
    }
    st->n_records++;
    enum wye_err err = WYE_OK;
    long long seq = (long long)rec.seq;
    bool named = !rec.mac_ok; /* one problem per record is enough */
    if (!rec.mac_ok) {
        st->n_mac_bad++;
        err = problem(st, lineno, "record seq %lld: MAC mismatch (record edited or forged)", seq);
    }
    /* The chain: prev must be the MAC of the record before. When that record failed its own
     * MAC it is already named, so accept its written MAC, the MAC its bytes should have had,
     * or the last good record's (an inserted forgery) rather than blame this one too. */
    static const uint8_t zeros[WYE_SHA256_LEN];
    bool chain_ok, seq_ok;
    if (!st->have_prev) {
        chain_ok = wye_ct_equal(rec.prev, zeros, WYE_SHA256_LEN);
        seq_ok = rec.seq == 1;
    } else {
        chain_ok = memcmp(rec.prev, st->prev_mac, WYE_SHA256_LEN) == 0;
        seq_ok = rec.seq == st->prev_seq + 1;
        if (!st->prev_mac_ok) {
            chain_ok = chain_ok || memcmp(rec.prev, st->prev_computed, WYE_SHA256_LEN) == 0 ||
                       (st->have_good && memcmp(rec.prev, st->good_mac, WYE_SHA256_LEN) == 0);
            seq_ok = seq_ok || (st->have_good && rec.seq == st->good_seq + 1);
        }
    }
    if (!err && !named && !chain_ok) {
        if (!st->have_prev) {
            err = problem(st, lineno,
                          "record seq %lld: chain broken: prev is not the chain's start (the "
                          "first records were deleted, or an older file was not given first)",
                          seq);
        } else if (seq_ok) {
            err = problem(st, lineno,
                          "record seq %lld: chain broken: prev does not match record seq %lld's "
                          "MAC (a record was replaced or reordered)",
                          seq, (long long)st->prev_seq);
        } else {
            err = problem(st, lineno,
                          "record seq %lld: chain broken: prev does not match record seq %lld's "
                          "MAC (a record was deleted or reordered)",
                          seq, (long long)st->prev_seq);
        }
    } else if (!err && !named && !seq_ok) {
        err = problem(st, lineno, "record seq %lld: seq does not follow %lld", seq,
                      st->have_prev ? (long long)st->prev_seq : 0LL);
    }
    st->have_prev = true;
    st->prev_seq = rec.seq;
    memcpy(st->prev_mac, rec.mac, WYE_SHA256_LEN);
    memcpy(st->prev_computed, rec.computed, WYE_SHA256_LEN);
    st->prev_mac_ok = rec.mac_ok;
    if (rec.mac_ok) {
        st->have_good = true;
        st->good_seq = rec.seq;
        memcpy(st->good_mac, rec.mac, WYE_SHA256_LEN);
    }
    return err;
}

enum wye_err rt_ledger_verify(const char *const *files, size_t n_files, const uint8_t *key,
                              size_t key_len, struct wye_buf *report, uint64_t *n_records,
                              char last_mac_hex[65])
{
    *n_records = 0;
    last_mac_hex[0] = '\0';
    struct verify_state st = {.report = report};
    st.h = wye_hmac_create(key, key_len);
    if (!st.h) {
        return WYE_ERR_NOMEM;
    }
    enum wye_err err = WYE_OK;
    for (size_t i = 0; i < n_files && !err; i++) {
        st.file = files[i];
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            char eb[128];
            wye_buf_printf(report, "%s: cannot open: %s\n", files[i],
                           wye_strerror(errno, eb, sizeof(eb)));
            err = WYE_ERR_IO;
            break;
        }
        err = ledger_lines_foreach(f, on_line, &st);
        fclose(f);
        if (err == WYE_ERR_IO) {
            wye_buf_printf(report, "%s: read error\n", files[i]);
        }
    }
    wye_hmac_destroy(st.h);
    *n_records = st.n_records;
    if (st.have_prev) {
        wye_hex_encode(st.prev_mac, WYE_SHA256_LEN, last_mac_hex);
    }
    if (err) {
        return err;
    }
    if (st.n_problems > VERIFY_PROBLEMS_MAX) {
        wye_buf_printf(report, "... and %" PRIu64 " more problems\n",
                       st.n_problems - VERIFY_PROBLEMS_MAX);
    }
    if (st.n_records > 0 && st.n_mac_bad == st.n_records) {
        wye_buf_printf(report, "every record fails its MAC: is this the right ledger key?\n");
    }
    return st.n_problems ? WYE_ERR_PARSE : WYE_OK;
}
