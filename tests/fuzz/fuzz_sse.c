/* libFuzzer entry point for the upstream wire format (router/sse.h). The input after an
 * FZ_SSE_HDR-byte header is an event stream. It is parsed once in one piece (the reference),
 * then again in pieces split where the header says, with the callback answering AGAIN every
 * k-th event and the rest fed again: both must see the same events, end the same way and agree
 * on rt_sse_pending. Each event's data is read as a chunk and as a whole completion, inside the
 * cJSON arena as on the upstream thread and optionally under allocation failure; the raw input
 * and each event also go through rt_error_body_message with a small buffer. Single-threaded.
 *
 * Header: [0..1] cap (bit 7 of [0]: the production cap, else 16..4096 bytes), [2] AGAIN every
 * [2] % 4 events (0: never), [3] bits 0-2 the largest piece (1 .. whole), bit 3 the arena, bit 4
 * no chunk reading, [4..6] the split PRNG's seed ([6] % 48 also the message buffer's size),
 * [7] 1..40: every allocation in chunk reading fails after [7] - 1 succeeded. */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "router/sse.h"
#include "tests/fuzz/fuzz_gateway.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PROD_CAP ((size_t)256 << 10) /* RT_SSE_EVENT_MAX (router/rt_internal.h) */
#define ARENA_BYTES ((size_t)16 << 10)

struct run {
    struct wye_buf log; /* per event: name, NUL, the length (8 bytes), data */
    size_t cap;
    int n;
    int again_every; /* answer AGAIN every k-th event (0: never) */
    bool read;       /* read each event as OpenAI JSON */
    bool arena;      /* ... inside the cJSON arena */
    long fail_after; /* ... with allocations failing after this many (< 0: never) */
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* As on the upstream thread: cJSON through the wrappers, chunk trees in an arena. */
    wye_alloc_install_cjson_hooks();
    if (wye_cjson_arena_init(ARENA_BYTES) != WYE_OK) {
        abort();
    }
    return 0;
}

static void check_message(const char *out, size_t outlen)
{
    if (outlen == 0) {
        return;
    }
    size_t k = strnlen(out, outlen);
    CHECK(k < outlen);
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)out[i];
        CHECK(c >= 0x20 && c != 0x7f);
    }
    CHECK(k == 0 || out[k - 1] != ' ');
}

static void error_message(const char *body, size_t len, size_t outlen)
{
    char out[48];
    memset(out, 'x', sizeof(out));
    rt_error_body_message(body, len, out, outlen);
    check_message(out, outlen);
}

static void read_chunk(struct run *r, const struct rt_sse_event *ev, bool full)
{
    struct rt_chunk c;
    char eb[160];
    eb[0] = '\0';
    if (r->fail_after >= 0) {
        wye_alloc_fail_after(r->fail_after);
    }
    if (r->arena) {
        wye_cjson_arena_begin();
    }
    enum wye_err err = rt_chunk_parse(ev->data, ev->len, full, &c, eb, sizeof(eb));
    if (r->arena) {
        wye_cjson_arena_end();
    }
    long failures = r->fail_after >= 0 ? wye_alloc_failures() : 0;
    wye_alloc_fail_after(-1);
    if (err == WYE_OK) {
        CHECK(c.root != NULL);
        if (c.content) {
            CHECK(strlen(c.content) < ev->len);
        }
        if (c.tool_calls) {
            cJSON *t = cJSON_Parse(c.tool_calls);
            CHECK(cJSON_IsArray(t)); /* printed by cJSON: reads back */
            cJSON_Delete(t);
        }
        if (c.has_usage) {
            CHECK(c.usage.prompt_tokens >= 0 && c.usage.completion_tokens >= 0);
        }
    } else {
        CHECK(err == WYE_ERR_PARSE || (err == WYE_ERR_NOMEM && failures > 0));
        CHECK(err != WYE_ERR_PARSE || eb[0] != '\0');
    }
    /* As chunk_release in upstream_xfer.c: rewind the arena when the tree lies in it. */
    if (r->arena && wye_cjson_arena_drop()) {
        memset(&c, 0, sizeof(c));
    } else {
        rt_chunk_cleanup(&c);
    }
}

static enum wye_err on_event(void *arg, const struct rt_sse_event *ev)
{
    struct run *r = arg;
    CHECK(ev->len <= r->cap);
    CHECK(ev->data[ev->len] == '\0');
    CHECK(strlen(ev->event) < RT_SSE_NAME_MAX);
    uint64_t len = ev->len;
    if (wye_buf_append_str(&r->log, ev->event) || wye_buf_append(&r->log, "", 1) ||
        wye_buf_append(&r->log, &len, sizeof(len)) || wye_buf_append(&r->log, ev->data, ev->len)) {
        abort();
    }
    if (r->read) {
        read_chunk(r, ev, false);
        read_chunk(r, ev, true);
        error_message(ev->data, ev->len, 1 + ev->len % 40);
    }
    r->n++;
    return r->again_every && r->n % r->again_every == 0 ? WYE_ERR_AGAIN : WYE_OK;
}

/* Feeds s[0..n) in one call, or in more when the callback stops the parser: every call must
 * report its progress, and after AGAIN the rest must be accepted. OK or the parser's error. */
static enum wye_err feed(struct rt_sse *p, struct run *r, const char *s, size_t n, bool used_null)
{
    for (;;) {
        size_t used = (size_t)-1;
        enum wye_err err = rt_sse_feed(p, s, n, used_null ? NULL : &used, on_event, r);
        if (used_null) {
            CHECK(err != WYE_ERR_AGAIN); /* only asked without AGAIN */
            return err;
        }
        CHECK(used <= n);
        if (err == WYE_ERR_AGAIN) {
            CHECK(used > 0);           /* the blank line that dispatched was consumed */
            CHECK(!rt_sse_pending(p)); /* stopped right after a dispatch */
            s += used;
            n -= used;
            continue;
        }
        if (err == WYE_OK) {
            CHECK(used == n);
        }
        return err;
    }
}

static uint32_t xorshift(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* A parser that failed stays failed: no progress, no event. */
static void check_failed(struct rt_sse *p, struct run *r)
{
    int n = r->n;
    size_t used = 1;
    CHECK(rt_sse_feed(p, "data: x\n\n", 9, &used, on_event, r) == WYE_ERR_TOOBIG);
    CHECK(used == 0 && r->n == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t pieces[8] = {1, 2, 3, 5, 16, 64, 512, (size_t)-1};
    if (size < FZ_SSE_HDR) {
        return 0;
    }
    const uint8_t *h = data;
    const char *in = (const char *)data + FZ_SSE_HDR;
    size_t n = size - FZ_SSE_HDR;
    size_t cap = h[0] & 0x80 ? PROD_CAP : 16 + (size_t)(h[0] << 8 | h[1]) % 4081;
    size_t piece_max = pieces[h[3] & 7];
    uint32_t rng = (uint32_t)(h[4] | h[5] << 8 | h[6] << 16) | 1u;

    error_message(in, n, h[6] % 48);

    struct rt_sse p;
    if (rt_sse_init(&p, cap) != WYE_OK) {
        abort();
    }
    CHECK(!rt_sse_pending(&p));

    /* the reference: one piece, no AGAIN, no reading */
    struct run ref = {.cap = cap, .fail_after = -1};
    wye_buf_init(&ref.log, (size_t)1 << 30);
    enum wye_err err_ref = feed(&p, &ref, in, n, false);
    CHECK(err_ref == WYE_OK || err_ref == WYE_ERR_TOOBIG);
    bool pending_ref = rt_sse_pending(&p);
    if (err_ref == WYE_OK) {
        /* a byte other than a line end leaves a line open (a lone BOM is skipped) */
        bool bom_only = n == 3 && memcmp(in, "\xEF\xBB\xBF", 3) == 0;
        if (n > 0 && in[n - 1] != '\n' && in[n - 1] != '\r' && !bom_only) {
            CHECK(pending_ref);
        }
        /* two more line ends finish whatever was open */
        err_ref = feed(&p, &ref, "\n\n", 2, false);
        CHECK(err_ref == WYE_OK || err_ref == WYE_ERR_TOOBIG);
        if (err_ref == WYE_OK) {
            CHECK(!rt_sse_pending(&p));
        }
    }
    if (err_ref) {
        check_failed(&p, &ref);
    }
    rt_sse_reset(&p);
    CHECK(!rt_sse_pending(&p));

    /* the same bytes in pieces, with AGAIN and the readers */
    struct run sp = {.cap = cap,
                     .again_every = h[2] % 4,
                     .read = !(h[3] & 0x10),
                     .arena = (h[3] & 0x08) != 0,
                     .fail_after = h[7] >= 1 && h[7] <= 40 ? (long)h[7] - 1 : -1};
    wye_buf_init(&sp.log, (size_t)1 << 30);
    bool used_null = sp.again_every == 0 && (rng & 2);
    enum wye_err err = WYE_OK;
    size_t off = 0;
    while (off < n && !err) {
        size_t k = piece_max == (size_t)-1 ? n - off : xorshift(&rng) % (piece_max + 1);
        if (k == 0) {
            err = feed(&p, &sp, in + off, 0, used_null); /* an empty write changes nothing */
            CHECK(err == WYE_OK);
            k = 1;
        }
        if (off == 0 && k < 3) {
            k = 3; /* a BOM is only recognised whole in the first write (sse.c) */
        }
        if (k > n - off) {
            k = n - off;
        }
        err = feed(&p, &sp, in + off, k, used_null);
        off += k;
    }
    if (!err) {
        CHECK(rt_sse_pending(&p) == pending_ref);
        err = feed(&p, &sp, "\n\n", 2, used_null);
    }
    CHECK(err == err_ref);
    if (err) {
        check_failed(&p, &sp);
    }
    CHECK(sp.n == ref.n);
    CHECK(sp.log.len == ref.log.len);
    CHECK(sp.log.len == 0 || memcmp(sp.log.data, ref.log.data, sp.log.len) == 0);

    rt_sse_cleanup(&p);
    wye_buf_cleanup(&ref.log);
    wye_buf_cleanup(&sp.log);
    return 0;
}
